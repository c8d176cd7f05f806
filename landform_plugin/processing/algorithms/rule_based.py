"""Rule-based landform classification (no model, no torch): ``landform:rulebasedlandforms``."""
from qgis.core import (
    QgsProcessingParameterBand,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...core import rules
from .. import styling
from .base import PAPER_CITATION, LandformAlgorithm


class RuleBasedLandformsAlgorithm(LandformAlgorithm):
    INPUT = "INPUT"
    BAND = "BAND"
    OUTPUT = "OUTPUT"

    def name(self):
        return "rulebasedlandforms"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("Rule-based landform classification")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        d = rules.RuleParams()
        return self.tr(
            "<p>Classifies a DEM into plain, platform, hill and mountain by the rules of the first level of "
            "China's 1:1,000,000 geomorphological classification (Cheng et al. 2011), the classes Yang et al. "
            "(2023) train their network on. No model and no PyTorch are needed: use it as a transparent "
            "baseline, or to label DEMs for training when no landform map exists.</p>"
            "<p><b>Rules.</b> The relief amplitude R of a cell is the highest minus the lowest elevation in a "
            "square <i>local window</i> around it. <b>Plain</b>: R below the plain threshold (30 m). "
            "<b>Hill</b>: R below the hill threshold (200 m). <b>Mountain</b>: R at or above it; with "
            "<i>Split mountains</i> the four relief classes of the full first level are written instead: "
            "4 low relief (200-500 m), 5 middle (500-1000 m), 6 high (1000-2500 m), 7 highest (2500 m and more). "
            "<b>Platform</b> (terraces, tablelands, mesas) is a raised flat surface: its relief in a small "
            "<i>surface window</i> is below 30 m (flat, plain-like top) AND its elevation is more than 30 m "
            "(Cheng et al.: a platform has a relief of more than 30 m) above its surroundings, taken as a low "
            "percentile (10th) of the elevations in a wide <i>surrounding window</i>. Platform takes "
            "precedence over the relief classes.</p>"
            "<p><b>Windows.</b> The source gives no window size; relief studies in China commonly use "
            "2-5 km&sup2;. The default local window is a square of 1414 m (2 km&sup2;): larger windows reach across "
            "the incised valleys of low plains and turn them into hills. The platform surface window (500 m) is "
            "smaller because platform tops are often narrower than the local window. Windows are given in "
            "metres and converted to cells with the cell size at the raster's central row (on geographic CRSs "
            "separately east-west and north-south, so the window stays square on the ground; for rasters "
            "spanning many degrees of latitude, reproject first).</p>"
            "<p><b>Parameters.</b> Elevation raster and band (metres); each threshold and window above, in "
            "metres, with the published value as default (local window {lw:g} m; plain {pl:g} m; hill {hl:g} m; "
            "platform height {ph:g} m, surface relief {fr:g} m, surface window {sw:g} m, surrounding window "
            "{ww:g} m, percentile {pc:g}); mountain relief bounds {mm:g}/{hm:g}/{xm:g} m.</p>"
            "<p><b>Output.</b> A Byte GeoTIFF on the DEM's exact grid: 0 no data (NoData value), 1 plain, "
            "2 platform, 3 hill, 4 mountain (or 4-7 with split mountains), with a colour table and class "
            "names, the same conventions as 'Classify landforms from DEM'. Processed block by block in bounded "
            "memory.</p>"
            "<p>Sources: Cheng et al. (2011): {cheng} Classes as used by: {paper}</p>"
        ).format(
            lw=d.local_window_m, pl=d.plain_max_relief_m, hl=d.hill_max_relief_m, ph=d.platform_height_m,
            fr=d.platform_flat_relief_m, sw=d.surface_window_m, ww=d.surround_window_m, pc=d.surround_percentile,
            mm=d.middle_mountain_relief_m, hm=d.high_mountain_relief_m, xm=d.highest_mountain_relief_m,
            cheng=rules.CHENG_CITATION, paper=PAPER_CITATION,
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Elevation raster (DEM, metres)")))
        self.addParameter(QgsProcessingParameterBand(self.BAND, self.tr("Elevation band"), 1, self.INPUT, optional=True))
        self.add_options(rules.RuleParams)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Landform classes (rules)")))

    def process(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            from ...core.errors import LandformError

            raise LandformError("No elevation raster was given, or it could not be loaded.")
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        params = rules.RuleParams(**self.read_options(rules.RuleParams, parameters, context))
        dest = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        progress = self.progress_from(feedback)
        result = rules.classify_raster(layer.source(), dest, params, band=band, progress=progress)
        for name, share in result["shares"].items():
            progress.info(f"{name}: {share:.1f} % of the valid cells")
        # Paletted style from the file's colour table and class names (also the 4-7 mountain codes).
        styling.apply_style_on_load(context, dest, "classes", name=self.tr("Landform classes (rules)"))
        return {self.OUTPUT: dest}

