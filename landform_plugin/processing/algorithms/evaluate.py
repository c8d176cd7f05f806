"""Evaluate a landform classification against a reference map: ``landform:evaluate``."""
from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from ...core.errors import LandformError
from ...core.evaluate import EvalOptions
from .base import PAPER_CITATION, LandformAlgorithm, layer_file


class EvaluateAlgorithm(LandformAlgorithm):
    INPUT = "INPUT"
    REFERENCE = "REFERENCE"
    ZONES = "ZONES"
    ZONE_FIELD = "ZONE_FIELD"
    OUTPUT = "OUTPUT"
    CONFUSION_CSV = "CONFUSION_CSV"
    CONFUSION_PNG = "CONFUSION_PNG"
    ZONES_CSV = "ZONES_CSV"
    PA = "PA"
    MIOU = "MIOU"
    PIXELS = "PIXELS"

    def name(self):
        return "evaluate"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("Evaluate landform classification")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return self.tr(
            "<p>Compares a landform class raster (from <i>Classify Landforms from DEM</i> or the rule-based "
            "algorithm) with a reference landform map and reports the accuracy measures of Yang et al. (2023): "
            "pixel accuracy (PA, eq. 2) and mean intersection over union (MIoU, eq. 3) over the classes 0 no "
            "data, 1 plain, 2 platform, 3 hill, 4 mountain; classes absent from both maps are left out of the "
            "mean. Also per-class IoU, precision and recall, and the confusion matrix as a table and as a "
            "row-normalised figure like the paper's Fig. 6.</p>"
            "<p><b>Inputs.</b> <i>Classified raster</i>: band 1 holds classes 0-4 (its NoData counts as class 0). "
            "<i>Reference</i>: a raster of class codes (resampled by nearest neighbour onto the classified grid) "
            "or a polygon layer saved in a file with a <i>class field</i> (pixel centres inside polygons). "
            "Reference pixels without a label are not counted. <i>Class mapping</i>: your reference codes to the "
            "classes, e.g. <code>10:1, 20:2, 30:3, 40:4, 99:ignore</code>; empty = codes 0-4 as they are. "
            "<i>Zones</i> (optional): a polygon layer; each zone (named by <i>zone field</i>, else by feature id) "
            "is evaluated on its own too, like the paper's six test areas (Fig. 8).</p>"
            "<p><b>Outputs.</b> A report (HTML with the figure embedded, or Markdown if the name ends in .md), "
            "the confusion matrix (CSV; rows = reference, columns = predicted, with per-class scores), the "
            "figure (PNG), the per-zone table (CSV), and PA, MIoU [%] and the number of pixels compared as "
            "numbers for use in a model.</p>"
            "<p>Reference: {paper}</p>"
        ).format(paper=PAPER_CITATION)

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Classified raster (classes 0-4)")))
        self.addParameter(QgsProcessingParameterMapLayer(self.REFERENCE, self.tr("Reference (class raster or polygon layer)")))
        self.add_options(EvalOptions)
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.ZONES, self.tr("Zones (optional polygons)"), [QgsProcessing.SourceType.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(self.ZONE_FIELD, self.tr("Zone name field"), parentLayerParameterName=self.ZONES, optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, self.tr("Report"), self.tr("HTML report (*.html);;Markdown report (*.md)")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.CONFUSION_CSV, self.tr("Confusion matrix (CSV)"), self.tr("CSV files (*.csv)"), optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.CONFUSION_PNG, self.tr("Confusion matrix figure (PNG)"), self.tr("PNG images (*.png)"), optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.ZONES_CSV, self.tr("Per-zone scores (CSV)"), self.tr("CSV files (*.csv)"), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.PA, self.tr("PA [%]")))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, self.tr("MIoU [%]")))
        self.addOutput(QgsProcessingOutputNumber(self.PIXELS, self.tr("Pixels compared")))

    def process(self, parameters, context, feedback):
        from ...core import evaluate as ev
        from ...core.layers import parse_mapping

        classified = layer_file(self.parameterAsRasterLayer(parameters, self.INPUT, context), "classified raster")
        ref_layer = self.parameterAsLayer(parameters, self.REFERENCE, context)
        reference = layer_file(ref_layer, "reference")
        opts = ev.EvalOptions(**self.read_options(ev.EvalOptions, parameters, context))
        field = opts.reference_field
        if ref_layer.type() == QgsMapLayer.LayerType.VectorLayer and not field:
            names = ", ".join(f.name() for f in ref_layer.fields())
            raise LandformError(f"The reference is a polygon layer: give its class field (one of {names}).")
        if ref_layer.type() == QgsMapLayer.LayerType.RasterLayer:
            field = None
        zones_layer = self.parameterAsVectorLayer(parameters, self.ZONES, context)
        zones = layer_file(zones_layer, "zone layer") if zones_layer is not None else None
        zone_fields = self.parameterAsFields(parameters, self.ZONE_FIELD, context)
        zone_field = zone_fields[0] if zone_fields else None
        report = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        cm_csv = self.parameterAsFileOutput(parameters, self.CONFUSION_CSV, context) or None
        cm_png = self.parameterAsFileOutput(parameters, self.CONFUSION_PNG, context) or None
        z_csv = self.parameterAsFileOutput(parameters, self.ZONES_CSV, context) or None
        res = ev.evaluate(
            classified, reference, field, parse_mapping(opts.code_mapping),
            zones=zones, zone_field=zone_field, confusion_csv=cm_csv, confusion_png=cm_png, report=report,
            zones_csv=z_csv if zones else None, progress=self.progress_from(feedback),
        )
        for i, name in enumerate(res.scores.class_names):
            iou = res.scores.iou[i]
            feedback.pushInfo(f"{name}: IoU {'n/a' if iou != iou else f'{100 * iou:.2f} %'}")
        return {
            self.OUTPUT: res.files.get("report"),
            self.CONFUSION_CSV: res.files.get("confusion_csv"),
            self.CONFUSION_PNG: res.files.get("confusion_png"),
            self.ZONES_CSV: res.files.get("zones_csv"),
            self.PA: round(100.0 * res.pa, 4),
            self.MIOU: round(100.0 * res.miou, 4),
            self.PIXELS: res.scores.total,
        }
