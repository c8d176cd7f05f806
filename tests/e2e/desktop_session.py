"""Runs INSIDE the real QGIS desktop (``qgis --code desktop_session.py``) under Xvfb.

It does what a user does: opens the Processing Toolbox on "Classify Landforms
from DEM", runs it on a DEM with its results loaded into the map, waits for the
canvas to render, saves a screenshot of the whole window and writes what it
found (plugin, provider, layers, renderers, legend labels) to a JSON report
that tests/e2e/test_desktop.py asserts on. Paths come from environment
variables so the test decides where things go (desktop_script).
"""
import os
import sys

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QDockWidget, QLineEdit
from qgis.utils import iface, plugins

sys.path.insert(0, os.environ["LANDFORM_DESKTOP_SCRIPTS"])
from desktop_script import DEM, OUT, run_session  # noqa: E402


def renderer_report(layer):
    r = layer.renderer()
    node = QgsProject.instance().layerTreeRoot().findLayer(layer.id())
    info = {"name": layer.name(), "renderer": r.type() if r else None, "band_count": layer.bandCount(),
            "visible": bool(node and node.isVisible())}
    if r is not None and r.type() == "paletted":
        info["classes"] = [(c.value, c.label, c.color.name()) for c in r.classes()]
    if r is not None and r.type() == "singlebandpseudocolor":
        shader = r.shader().rasterShaderFunction()
        info["band"] = r.band()
        info["min"], info["max"] = shader.minimumValue(), shader.maximumValue()
    if r is not None and r.type() == "singlebandgray":
        info["band"] = r.grayBand()
    return info


def show_toolbox():
    dock = iface.mainWindow().findChild(QDockWidget, "ProcessingToolbox")
    if dock is None:
        return False
    dock.setVisible(True)
    search = dock.findChild(QLineEdit)
    if search is not None:
        search.setText("Classify Landforms")
    return True


def run():
    import processing

    report = {"plugin_loaded": "landform_classifier" in plugins}
    provider = QgsApplication.processingRegistry().providerById("landform")
    report["algorithms"] = sorted(a.id() for a in provider.algorithms()) if provider else []
    report["toolbox_shown"] = show_toolbox()
    result = processing.runAndLoadResults(
        "landform:classifylandforms",
        {"INPUT": DEM, "OUTPUT": os.path.join(OUT, "classes.tif"), "CONFIDENCE": os.path.join(OUT, "confidence.tif")},
    )
    report["result"] = {k: str(v) for k, v in result.items()}
    report["layers"] = [
        dict(renderer_report(l), source=l.source())
        for l in QgsProject.instance().mapLayers().values()
        if isinstance(l, QgsRasterLayer)
    ]
    canvas = iface.mapCanvas()
    canvas.zoomToFullExtent()
    canvas.refreshAllLayers()
    canvas.waitWhileRendering()
    return report


def shoot(report):
    iface.mapCanvas().waitWhileRendering()
    iface.mainWindow().grab().save(os.path.join(OUT, "desktop.png"))


run_session(run, shoot, 3000)
