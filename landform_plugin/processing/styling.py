"""Styles applied to Processing outputs when QGIS loads them on completion.

Algorithms never load layers themselves; they call ``apply_style_on_load``,
which attaches a ``QgsProcessingLayerPostProcessorInterface`` to the output's
load details only when ``context.willLoadLayerOnCompletion(dest)`` (not in
batch runs or the modeler's intermediate outputs). QGIS keeps no Python
reference to a post-processor, so every one is kept in ``_KEEP`` for the
life of the plugin.

Kinds (generic, reused by the terrain-factor and rule-based algorithms):

- ``"classes"``: paletted renderer from the raster's colour table and category
  names (or the default landform scheme), so the legend reads Plain / Platform /
  Hill / Mountain; class 0 / NoData transparent.
- ``"heatmap"``: single-band pseudocolour 0-1 ramp (probabilities).
  ``band_layers=True`` additionally adds one styled layer per band (each class's
  confidence heatmap as its own layer), grouped under the output's name.
- ``"hillshade"``: grey 0-255 (1-255 illumination).
- ``"factor"``: single-band grey stretched on min/max.

QML files with the same looks are in ``resources/styles/`` for manual use
(Layer Properties > Style > Load Style).
"""
import os
from typing import List, Optional, Sequence, Tuple

from qgis.core import (
    QgsColorRampShader,
    QgsContrastEnhancement,
    QgsLayerTreeGroup,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterBandStats,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandGrayRenderer,
    QgsSingleBandPseudoColorRenderer,
)
from qgis.PyQt.QtGui import QColor

from ..core.labels import DEFAULT_CLASSES

STYLES_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "resources", "styles"))
KINDS = ("classes", "heatmap", "hillshade", "factor")

_KEEP: List["StylePostProcessor"] = []


# ----------------------------------------------------------------------------- renderers


def class_entries(layer: QgsRasterLayer, band: int = 1) -> List[Tuple[int, QColor, str]]:
    """(value, colour, label) for each class: from the raster's colour table + category names,
    else the default landform scheme; class 0 (no data) left out."""
    entries = []
    try:
        from osgeo import gdal

        ds = gdal.Open(layer.source())
        b = ds.GetRasterBand(band) if ds is not None else None
        ct = b.GetRasterColorTable() if b is not None else None
        names = (b.GetCategoryNames() or []) if b is not None else []
        if ct is not None and names:
            for code, name in enumerate(names):
                if code == 0 or not name:
                    continue
                r, g, bl, _a = ct.GetColorEntry(code)
                entries.append((code, QColor(r, g, bl), name))
    except Exception:  # noqa: BLE001 - fall back to the default scheme
        entries = []
    if not entries:
        entries = [(c.code, QColor(*c.color), c.name) for c in DEFAULT_CLASSES if c.code != 0]
    return entries


def paletted_renderer(layer: QgsRasterLayer, band: int = 1, entries=None) -> QgsPalettedRasterRenderer:
    entries = entries or class_entries(layer, band)
    classes = [QgsPalettedRasterRenderer.Class(int(v), c, str(label)) for v, c, label in entries]
    return QgsPalettedRasterRenderer(layer.dataProvider(), band, classes)


def heatmap_renderer(layer: QgsRasterLayer, band: int, color: Optional[Sequence[int]] = None) -> QgsSingleBandPseudoColorRenderer:
    """0-1 ramp: white to the class colour (per class), or red-yellow-green (top-class confidence)."""
    if color is None:
        stops = [(0.0, QColor(215, 25, 28)), (0.5, QColor(255, 255, 191)), (1.0, QColor(26, 150, 65))]
    else:
        c = QColor(*color)
        stops = [(0.0, QColor(255, 255, 255)), (0.5, QColor((255 + c.red()) // 2, (255 + c.green()) // 2, (255 + c.blue()) // 2)), (1.0, c)]
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Type.Interpolated)
    ramp.setColorRampItemList([QgsColorRampShader.ColorRampItem(v, col, f"{v:.1f}") for v, col in stops])
    shader = QgsRasterShader(0.0, 1.0)
    shader.setRasterShaderFunction(ramp)
    r = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), band, shader)
    r.setClassificationMin(0.0)
    r.setClassificationMax(1.0)
    return r


def gray_renderer(layer: QgsRasterLayer, band: int = 1, lo: Optional[float] = None, hi: Optional[float] = None) -> QgsSingleBandGrayRenderer:
    r = QgsSingleBandGrayRenderer(layer.dataProvider(), band)
    if lo is None or hi is None:
        stats = layer.dataProvider().bandStatistics(band, QgsRasterBandStats.Stats.Min | QgsRasterBandStats.Stats.Max)
        lo, hi = stats.minimumValue, stats.maximumValue
    ce = QgsContrastEnhancement(layer.dataProvider().dataType(band))
    ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
    ce.setMinimumValue(lo)
    ce.setMaximumValue(hi)
    r.setContrastEnhancement(ce)
    return r


def apply_style(layer: QgsRasterLayer, kind: str, band: int = 1, color=None) -> None:
    """Set the renderer of ``layer`` for ``kind`` (see module docstring) and repaint."""
    if kind == "classes":
        layer.setRenderer(paletted_renderer(layer, band))
    elif kind == "heatmap":
        layer.setRenderer(heatmap_renderer(layer, band, color))
    elif kind == "hillshade":
        layer.setRenderer(gray_renderer(layer, band, 0, 255))
    elif kind == "factor":
        layer.setRenderer(gray_renderer(layer, band))
    else:
        raise ValueError(f"unknown style kind {kind!r}; one of {KINDS}")
    layer.triggerRepaint()


# ----------------------------------------------------------------------------- on load


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded output; optionally adds one styled layer per band (heatmaps)."""

    def __init__(self, kind: str, band: int = 1, color=None, band_layers: Optional[Sequence[Tuple[int, str, object]]] = None):
        super().__init__()
        self.kind = kind
        self.band = band
        self.color = color
        self.band_layers = list(band_layers or [])
        self.added_layers: List[QgsRasterLayer] = []

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if not isinstance(layer, QgsRasterLayer):
            return
        apply_style(layer, self.kind, self.band, self.color)
        project = context.project()
        if project is None:
            return
        root = project.layerTreeRoot()
        if self.kind == "heatmap":
            # Loaded above the class layer, an opaque heatmap would hide the landform
            # map, which is what users open the result for: heatmaps start unticked.
            node = root.findLayer(layer.id())
            if node is not None:
                node.setItemVisibilityChecked(False)
        if not self.band_layers:
            return
        group: QgsLayerTreeGroup = root.insertGroup(0, f"{layer.name()} by class")
        for band, name, color in self.band_layers:
            extra = QgsRasterLayer(layer.source(), name, "gdal")
            if not extra.isValid():
                continue
            apply_style(extra, "heatmap", band, color)
            project.addMapLayer(extra, False)
            group.addLayer(extra)
            self.added_layers.append(extra)
        group.setExpanded(False)
        for child in group.children():
            child.setItemVisibilityChecked(False)


def apply_style_on_load(context, dest: str, kind: str, band: int = 1, color=None, band_layers=None, name: Optional[str] = None) -> Optional[StylePostProcessor]:
    """Attach a styling post-processor to output ``dest`` if it will be loaded on completion.

    ``band_layers``: [(band, layer name, RGB or None)] extra per-band heatmap layers.
    Returns the post-processor (kept alive here) or None when the output is not loaded.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown style kind {kind!r}; one of {KINDS}")
    if context is None or not context.willLoadLayerOnCompletion(dest):
        return None
    details = context.layerToLoadOnCompletionDetails(dest)
    if name:
        details.name = name
    pp = StylePostProcessor(kind, band, color, band_layers)
    _KEEP.append(pp)
    details.setPostProcessor(pp)
    return pp


def qml_path(kind: str) -> str:
    return os.path.join(STYLES_DIR, f"{kind}.qml")
