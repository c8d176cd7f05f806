"""Derive terrain factors (paper section 3.1): ``landform:terrainfactors``."""
from qgis.core import (
    QgsProcessingParameterBand,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from .. import styling
from ...core import terrain
from ...core.errors import LandformError
from .base import PAPER_CITATION, LandformAlgorithm


class TerrainFactorsAlgorithm(LandformAlgorithm):
    INPUT = "INPUT"
    BAND = "BAND"
    SLOPE = "SLOPE"
    ASPECT = "ASPECT"
    HILLSHADE = "HILLSHADE"
    RDLS = "RDLS"
    CURVATURE = "CURVATURE"
    PROFILE_CURVATURE = "PROFILE_CURVATURE"
    PLAN_CURVATURE = "PLAN_CURVATURE"
    CORRELATION = "CORRELATION"

    # output key -> (core factor name, label, created by default)
    # The paper kept DEM, slope, RDLS, hillshade and surface curvature as model
    # inputs (section 4.1), so those are created by default.
    OUTPUTS = [
        (SLOPE, "slope", "Slope (degrees)", True),
        (ASPECT, "aspect", "Aspect (degrees clockwise from north, -1 flat)", False),
        (HILLSHADE, "hillshade", "Hillshade (1-255)", True),
        (RDLS, "rdls", "RDLS, relief degree of land surface (m)", True),
        (CURVATURE, "curvature", "Surface curvature (1/100 m, positive convex)", True),
        (PROFILE_CURVATURE, "profile_curvature", "Profile curvature (1/100 m, positive convex)", False),
        (PLAN_CURVATURE, "plan_curvature", "Plan curvature (1/100 m, positive convex)", False),
    ]

    def name(self):
        return "terrainfactors"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("Derive terrain factors")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return self.tr(
            "<p>Derives the terrain factors Yang et al. (2023) use as network inputs from a DEM: slope, aspect, "
            "hillshade, RDLS (relief degree of land surface) and the surface, profile and plan curvatures, and "
            "optionally a table of their correlations with the DEM (the paper's Fig. 4). Each output is optional; "
            "leave one unset (Skip output) to not compute it.</p>"
            "<p><b>Parameters.</b> <i>Elevation raster</i> and <i>band</i>: the DEM (elevations in metres, or "
            "any unit with a z-factor); NoData is read from the file and stays NoData. Projected and geographic "
            "CRSs both work: on a geographic CRS the cell size is converted to metres for every row from its "
            "latitude, so results match the same DEM reprojected to UTM. <i>Z-factor</i>: multiplies "
            "elevations before anything is computed (0.3048 for a DEM in feet). <i>Sun azimuth</i> (degrees "
            "clockwise from north, default 315) and <i>sun altitude</i> (degrees above the horizon, default 45): "
            "the light for the hillshade. <i>RDLS window</i> (metres, default 1000): the side of the square "
            "window in which RDLS takes the highest minus the lowest elevation; it is converted to an odd number "
            "of cells from the cell size at the raster's central row (east-west and north-south separately). "
            "The paper does not state its window; 1 km (about 1 km&sup2;, 33 cells of its 30 m AW3D30 DEM) is a "
            "common statistical unit for relief; 'Rule-based landform classification' uses 1414 m (2 km&sup2;): "
            "set that here to see the relief its rules threshold.</p>"
            "<p><b>Outputs</b> (tiled ZSTD GeoTIFFs on the DEM's exact grid and CRS; Float32 with NoData -9999, "
            "hillshade Byte with NoData 0). <b>Slope</b>: degrees (Horn 1981, as gdaldem). <b>Aspect</b>: "
            "degrees clockwise from north, the direction the slope faces; -1 on flat cells (gdaldem writes its "
            "NoData there). <b>Hillshade</b>: 1-255, as gdaldem hillshade. <b>RDLS</b>: metres. <b>Curvatures</b> "
            "(Zevenbergen &amp; Thorne 1987, 3x3 window): units of 1/(100 m) (100 times the second derivative, "
            "the ArcGIS and RichDEM scaling); positive = convex (ridges, hilltops, upper slope breaks), negative "
            "= concave (valleys, hollows) for all three; RichDEM's and ArcGIS's profile curvature has the "
            "opposite sign. Cells on the raster edge and next to NoData are computed as gdaldem does with "
            "-compute_edges. <b>Correlation table</b>: CSV matrix of Pearson correlations between the DEM and "
            "all seven factors over a regular sample of up to 200,000 cells (flat cells excluded for "
            "aspect), with the number of cells used.</p>"
            "<p>Processed block by block (memory does not grow with the raster); cancelling removes every "
            "output.</p>"
            "<p>Source: {paper}</p>"
        ).format(paper=PAPER_CITATION)

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Elevation raster (DEM)")))
        self.addParameter(QgsProcessingParameterBand(self.BAND, self.tr("Elevation band"), 1, self.INPUT, optional=True))
        self.add_options(terrain.FactorParams)
        for key, _, label, default in self.OUTPUTS:
            self.addParameter(QgsProcessingParameterRasterDestination(key, self.tr(label), None, True, default))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.CORRELATION, self.tr("Factor correlation table"), self.tr("CSV files (*.csv)"), None, True, False
            )
        )

    def process(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise LandformError("No elevation raster was given, or it could not be loaded.")
        if layer.providerType() != "gdal":
            raise LandformError(
                f"'{layer.name()}' is a {layer.providerType()} layer; terrain factors need a raster file "
                "(save it as a GeoTIFF first)."
            )
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        params = terrain.FactorParams(**self.read_options(terrain.FactorParams, parameters, context))
        outputs, keys = {}, {}
        for key, name, _, _ in self.OUTPUTS:
            dest = self.parameterAsOutputLayer(parameters, key, context)
            if dest:
                outputs[name] = dest
                keys[name] = key
        table = self.parameterAsFileOutput(parameters, self.CORRELATION, context) or None
        if not outputs and not table:
            raise LandformError(
                "Choose at least one output: a file (or TEMPORARY_OUTPUT) for one of "
                + ", ".join(key for key, _, _, _ in self.OUTPUTS)
                + f" or {self.CORRELATION}."
            )
        progress = self.progress_from(feedback)
        result = terrain.derive_terrain_factors(layer.source(), outputs, band=band, params=params, correlation_csv=table, progress=progress)
        if result["rdls_window_px"] and "rdls" in outputs:
            rows, cols = result["rdls_window_px"]
            progress.info(f"RDLS window: {cols} x {rows} cells")
        out = {keys[name]: path for name, path in result["outputs"].items()}
        for name, path in result["outputs"].items():
            styling.apply_style_on_load(context, path, "hillshade" if name == "hillshade" else "factor")
        if table:
            out[self.CORRELATION] = table
        return out
