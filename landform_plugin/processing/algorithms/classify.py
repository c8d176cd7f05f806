"""Classify landforms from a DEM with a trained network: ``landform:classifylandforms``."""
import os

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ...core.errors import LandformError
from ...core.predict import ClassifyOptions
from .. import styling
from .base import PAPER_CITATION, LandformAlgorithm

MODELS_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "models"))
DEFAULT_MODEL = os.path.join(MODELS_DIR, "default_model.safetensors")


def default_model_path() -> str:
    """The bundled model if it is installed, else '' (the user must choose a file)."""
    return DEFAULT_MODEL if os.path.isfile(DEFAULT_MODEL) else ""


class ClassifyLandformsAlgorithm(LandformAlgorithm):
    INPUT = "INPUT"
    BAND = "BAND"
    MODEL = "MODEL"
    SCHEDULER = "SCHEDULER"
    EXTENT = "EXTENT"
    OUTPUT = "OUTPUT"
    CONFIDENCE = "CONFIDENCE"
    MODEL_INFO = "MODEL_INFO"
    PIXEL_SIZE_USED = "PIXEL_SIZE_USED"
    TILES = "TILES"

    def name(self):
        return "classifylandforms"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("Classify Landforms from DEM")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return self.tr(
            "<p>Classifies every cell of a DEM into <b>plain, platform, hill or mountain</b> with a trained "
            "FCN-ResNet (the network of Yang et al. 2023: a ResNet encoder whose last three stages feed a light "
            "FCN-8s-style decoder), and writes per-class confidence heatmaps.</p>"
            "<p><b>How.</b> The DEM is resampled to the model's ground pixel size on a lattice fixed on the Earth "
            "(geographic CRSs such as EPSG:4326 in the UTM zone(s) they cover, projected CRSs in their own), so "
            "adjacent DEMs or crops of one get the same classes away from their edges; it is cut into abutting tiles "
            "aligned to the network's output stride, each predicted with 128 cells of surrounding terrain as "
            "context that is then cut away, so every cell is predicted once and no seams appear (a tile's "
            "prediction differs from a whole-raster pass on about 1 cell in 10,000); the results are brought "
            "back onto the DEM's own grid. Elevation is normalised per cell "
            "as its height above the mean of its ~10 km surroundings (divided by 500 m), so a plain on a high "
            "plateau is still a plain and no tile sees different numbers for the same cell. Memory stays bounded "
            "whatever the DEM size.</p>"
            "<p><b>Parameters.</b> <i>Elevation raster</i> and <i>band</i>: the DEM (metres; it needs a CRS). "
            "<i>Model file</i>: a landform model (.safetensors) trained by this plugin; empty = the bundled "
            "model in the plugin's models/ folder. <i>Processing resolution</i> [m]: ground cell size the DEM "
            "is resampled to; 0 = the size the model was trained at (recommended). <i>Tile size</i> [cells, "
            "a multiple of the network's output stride, 32 for ResNets; 0 = 2048 or the model's own if larger]: "
            "smaller tiles need less memory. <i>Tile overlap</i> [fraction of the tile, 0-0.75]: 0 = abutting "
            "tiles (the default); above 0, overlapping tiles blended with a smooth Hann window (slower). "
            "<i>Context margin</i> [cells]: terrain read around each tile for context, not kept "
            "(-1 = 128, measured to be enough for the bundled model; raise it for models that see further). "
            "<i>Steady maps</i>: average the network over 4 flipped or 8 flipped and rotated copies of each tile "
            "(4x or 8x the time): the map then no longer depends on the DEM's orientation (it is not steadier "
            "under noise: the bundled model was trained for that). <i>Smoothing</i> [Gaussian sigma, cells of the "
            "processing grid; 5 by default, 0 = off]: the landform probabilities are smoothed before each cell's "
            "class is chosen, which removes most of the speckle a CNN's strided grid leaves (measured for the "
            "bundled model on six DEMs it never saw: a one-cell shift of the DEM changes 0.82 % of the cells "
            "instead of 1.8 %, a flip 2.1 % instead of 3.7 %, for 0.7 points less agreement with the rule "
            "classes); set 0 for the network's own, more detailed map. <i>Cloud Optimized GeoTIFF</i>: write the outputs "
            "as COGs with overviews. "
            "<i>Reuse memory</i> (advanced, Linux): on the CPU the network's layers reuse the memory the "
            "layers before freed instead of fresh pages from the system; measured on an 8192 x 8192 DEM with "
            "FCN-ResNet18: 1.16-1.43x faster, peak memory 1.8 GB instead of 1.25-1.27 GB; the outputs are "
            "identical. "
            "<i>Batch size</i>: tiles per forward pass (lower it if memory runs out). <i>Device</i>: auto "
            "(CUDA GPU if PyTorch sees one, else CPU), cpu or cuda. <i>Extent</i> (optional): classify only this "
            "part of the DEM (snapped outward to whole DEM cells). <i>Block size</i> [cells] (advanced): the run "
            "is cut into independent blocks of about this many processing cells a side (4096); the result "
            "does not depend on it. <i>Dask scheduler address</i> (advanced, "
            "optional): empty = classify here; an address such as tcp://10.0.0.5:8786 = send the blocks of "
            "the run to that Dask cluster (its workers need this plugin's folder on their Python path and "
            "must see the DEM, model and output folder under the same paths); progress follows the finished "
            "blocks and Cancel cancels them on the cluster.</p>"
            "<p><b>Outputs.</b> <i>Landform classes</i>: Byte GeoTIFF on the DEM's grid, 0 no data (NoData), "
            "1 plain, 2 platform, 3 hill, 4 mountain, with a colour table; loaded with a paletted legend. "
            "<i>Class confidence</i>: Float32 GeoTIFF, one band per class with its softmax probability (0-1) "
            "and a last band 'Top-class confidence' (the probability of the class chosen); NoData -1 where "
            "the DEM has none (with <i>Confidence as Byte</i>: Byte 0-250 with a band scale of 1/250, "
            "shown as 0-1, NoData 255). When loaded, each class's heatmap is also added as its own layer (group "
            "'... by class', hidden at first).</p>"
            "<p><b>Edges.</b> Near a DEM's edge the network sees terrain on one side only, and the map can differ "
            "from a run on a larger DEM within a few km of the edge (the log says which edges hold data up to "
            "the border). To map adjacent DEM tiles, classify them together in one run (a VRT, or the tiles "
            "listed in a text file on the command line): a mosaic has no edges between its tiles. NoData "
            "(voids, sea) is filled from its edge up to 2 km before the network sees the DEM, so a void does "
            "not disturb the map around it; those cells stay NoData in the outputs.</p>"
            "<p>Needs PyTorch and torchvision in QGIS's Python (the algorithm explains how to install them if "
            "they are missing). Reference: {paper}</p>"
        ).format(paper=PAPER_CITATION)

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Elevation raster (DEM, metres)")))
        self.addParameter(QgsProcessingParameterBand(self.BAND, self.tr("Elevation band"), 1, self.INPUT, optional=True))
        model = QgsProcessingParameterFile(
            self.MODEL,
            self.tr("Model file (.safetensors; empty = bundled model)"),
            QgsProcessingParameterFile.Behavior.File,
            "safetensors",
            default_model_path() or None,
            optional=True,
        )
        self.addParameter(model)
        self.add_options(ClassifyOptions)  # resolution, tiling, batch, device, block size, COG: declared once
        scheduler = QgsProcessingParameterString(
            self.SCHEDULER, self.tr("Dask scheduler address (empty = this computer)"), "", False, True
        )
        scheduler.setFlags(scheduler.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(scheduler)
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent (optional)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Landform classes")))
        self.addParameter(
            # Optional (created by default in the dialog): scripts and chains may want the classes alone.
            QgsProcessingParameterRasterDestination(
                self.CONFIDENCE, self.tr("Class confidence (probabilities)"), None, True, True
            )
        )
        self.addOutput(QgsProcessingOutputString(self.MODEL_INFO, self.tr("Model used")))
        self.addOutput(QgsProcessingOutputNumber(self.PIXEL_SIZE_USED, self.tr("Processing resolution used [m]")))
        self.addOutput(QgsProcessingOutputNumber(self.TILES, self.tr("Number of tiles predicted")))

    def process(self, parameters, context, feedback):
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise LandformError("No elevation raster was given, or it could not be loaded.")
        band = self.parameterAsInt(parameters, self.BAND, context) or 1
        model_path = (self.parameterAsFile(parameters, self.MODEL, context) or "").strip() or default_model_path()
        if not model_path:
            raise LandformError(
                "No model file was given and the bundled model (models/default_model.safetensors in the plugin "
                "folder) is not installed. Choose a landform model (.safetensors) trained with this plugin."
            )
        # Check the model file before importing torch: a bad file gets its own message.
        from ...core.modelfile import describe, read_spec

        spec = read_spec(model_path)
        from ...core.errors import import_torch

        import_torch()  # MissingDependency with install instructions when torch is absent
        from ...core.blocks import DaskEngine
        from ...core.predict import classify

        extent = None
        if parameters.get(self.EXTENT) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if rect is not None and not rect.isNull() and not rect.isEmpty():
                extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        opt = ClassifyOptions(band=band, extent=extent, **self.read_options(ClassifyOptions, parameters, context))
        dest = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        conf_dest = self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context)
        progress = self.progress_from(feedback)
        progress.info(f"Model: {describe(spec)}")
        scheduler = (self.parameterAsString(parameters, self.SCHEDULER, context) or "").strip()
        engine = DaskEngine(scheduler) if scheduler else None
        summary = classify(layer.source(), model_path, dest, conf_dest or None, opt, progress, engine=engine)
        for name, share in summary["class_shares"].items():
            progress.info(f"{name}: {100 * share:.1f} % of the valid cells")
        progress.info(
            f"{summary['tiles']} tiles in {summary['blocks']} block(s) on {summary['device']}: {summary['wall_s']:.1f} s in all, "
            f"{summary['forward_s']:.1f} s in the network."
        )
        styling.apply_style_on_load(context, dest, "classes")
        if conf_dest:
            classes = spec["classes"]
            band_layers = [
                (i + 1, f"{c['name']} confidence", tuple(c["color"])) for i, c in enumerate(classes) if int(c["code"]) != 0
            ]
            styling.apply_style_on_load(
                context, conf_dest, "heatmap", band=len(classes) + 1, band_layers=band_layers
            )
        return {
            self.OUTPUT: dest,
            self.CONFIDENCE: conf_dest,
            self.MODEL_INFO: f"{os.path.basename(model_path)}: {describe(spec)}",
            self.PIXEL_SIZE_USED: summary["pixel_size_m"],
            self.TILES: summary["tiles"],
        }
