"""Train a landform model from DEMs and a landform map: ``landform:trainmodel``."""
import os
import tempfile

from qgis.core import (
    QgsMapLayer,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterString,
    QgsProcessing,
)

from ...core.devices import CHOICES as DEVICES
from ...core.errors import LandformError
from ...core.nets.registry import PRESET_LABELS, PRESETS
from ...core.chipset import ChipConfig
from ...core.train import TrainConfig
from .base import PAPER_CITATION, LandformAlgorithm, layer_file

ARCHITECTURES = list(PRESETS)  # Processing shows PRESET_LABELS; indices are stable (presets are only appended)
FACTORS = ["dem", "slope", "aspect", "hillshade", "rdls", "curvature", "profile_curvature", "plan_curvature"]


class TrainModelAlgorithm(LandformAlgorithm):
    DEMS = "DEMS"
    LABELS = "LABELS"
    LABEL_FIELD = "LABEL_FIELD"
    CODE_MAPPING = "CODE_MAPPING"
    FACTORS = "FACTORS"
    ARCHITECTURE = "ARCHITECTURE"
    ENCODER_WEIGHTS = "ENCODER_WEIGHTS"
    INIT_MODEL = "INIT_MODEL"
    SEED = "SEED"
    DEVICE = "DEVICE"
    RESUME = "RESUME"
    CHIPS = "CHIPS"
    OUTPUT = "OUTPUT"
    LOG_CSV = "LOG_CSV"
    CURVE_PNG = "CURVE_PNG"
    CONFUSION_CSV = "CONFUSION_CSV"
    CONFUSION_PNG = "CONFUSION_PNG"
    VAL_PA = "VAL_PA"
    VAL_MIOU = "VAL_MIOU"
    CHIP_COUNT = "CHIP_COUNT"

    def name(self):
        return "trainmodel"

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr("Train landform model")

    def shortHelpString(self):  # noqa: N802 (QGIS API)
        return self.tr(
            "<p>Trains a landform segmentation network on your own landform map, with the recipe of Yang et al. "
            "(2023) as defaults; the model file it writes is used by <i>Classify Landforms from DEM</i>.</p>"
            "<p><b>How.</b> The DEMs and labels are first cut into square chips without overlap (saved as numpy "
            "+ JSON in the chip folder, so the same training can also run on a GPU machine without QGIS: "
            "<code>python -m landform_plugin.core train --chips FOLDER --out model.safetensors</code>). The "
            "chips are split at random (seeded) into training and validation sets; the network is trained with "
            "weighted cross-entropy, w = 1 + 1/share of each class (1 for no data), and Adam, the learning rate "
            "held for the first epochs and then decayed linearly to 0. Validation runs in evaluation mode after "
            "every epoch; each completed epoch is kept as a checkpoint, so a cancelled run can be resumed.</p>"
            "<p><b>Inputs.</b> <i>DEMs</i>: one or more elevation rasters (metres, with a CRS). <i>Labels</i>: a "
            "raster of class codes (placed on each DEM's grid by nearest neighbour) or a polygon layer saved in a "
            "file (rasterised; give the <i>class field</i>). DEM NoData is class 0 'no data'; DEM cells without a "
            "label are left out of the loss. <i>Class mapping</i>: your codes to the model's classes 0 no data, "
            "1 plain, 2 platform, 3 hill, 4 mountain, e.g. <code>10:1, 20:2, 30:3, 40:4, 99:ignore</code>; empty "
            "= codes 0-4 as they are. <i>Input factors</i>: DEM only (default) or any terrain factors "
            "(slope [deg], hillshade, RDLS [m], curvatures...), normalised exactly as classification does. "
            "<i>Processing resolution</i> [m]: pixel size the DEMs are resampled to (0 = each DEM's own; the "
            "paper: 30 m). <i>Chip size</i> [pixels, multiple of 32]: the paper's 1024; smaller for small DEMs. "
            "<i>Boundary labelling</i> (paper Table 4): original boundaries; ignore a buffer of N pixels on each "
            "side of class boundaries; or random labels in that buffer.</p>"
            "<p><b>Network.</b> FCN-ResNet50 (the paper's), FCN-ResNet101, DeepLabv3-ResNet101 (or -ResNet50), U-Net, Attention "
            "U-Net, FCN-8s (the paper's Table 3), and FCN-ResNet18/34 for CPUs. Several factors go either through "
            "one encoder each, features concatenated (the paper's multichannel model), or stacked as channels of "
            "one encoder. <i>Encoder weights</i>: empty = random initialisation; or a local .safetensors file of "
            "torchvision ResNet (or VGG16 for FCN-8s) ImageNet weights. Nothing is downloaded. The paper's Fig. 5 "
            "shows that ImageNet weights make training converge much faster and better. <i>Fine-tune</i>: start "
            "from a landform model file instead (the bundled one, or your own): its network and weights are used "
            "and the network choice is ignored; its input factors must be the ones chosen here.</p>"
            "<p><b>Robustness.</b> <i>Perturbed copies of each DEM</i> (0 = none) adds chips cut from copies of "
            "each DEM with random noise (0-12 m), often a smooth error field like a radar DEM's, NoData voids, "
            "or the DEM cropped, its input computed on the crop alone; their labels stay those of the clean, "
            "whole DEM. A network trained with them changes fewer cells when the DEM is noisy, has voids or is "
            "cut elsewhere, and learns what a raster's edge looks like.</p>"
            "<p><b>Training.</b> Epochs (50), learning rate (1e-5), epochs before the decay (20), batch size "
            "(0 = 4 for one factor, 2 for several), validation share (0.2), seed, class-weight cap (0 = none; a "
            "class of 0.3 % gets a weight of 334 otherwise and is over-predicted), flip/rotate augmentation, time "
            "and iteration limits (0 = none), device (a CUDA GPU with mixed precision when present), and "
            "<i>resume</i> from the checkpoint beside the model file. Networks trained from scratch at small batches "
            "can do much worse in evaluation mode than in training (BatchNorm statistics); re-estimating the "
            "statistics over some training batches at the end fixes that without changing the weights.</p>"
            "<p><b>Outputs.</b> The model file (.safetensors, with the training summary and validation scores "
            "inside), a per-epoch log (CSV: loss, PA, MIoU on training and validation, learning rate, seconds), "
            "training curves (PNG), the validation confusion matrix (CSV and PNG), validation PA and MIoU [%].</p>"
            "<p>Needs PyTorch and torchvision in QGIS's Python. Reference: {paper}</p>"
        ).format(paper=PAPER_CITATION)

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterMultipleLayers(self.DEMS, self.tr("DEMs (elevation, metres)"), QgsProcessing.SourceType.TypeRaster))
        self.addParameter(QgsProcessingParameterMapLayer(self.LABELS, self.tr("Labels (class raster or polygon layer)")))
        self.addParameter(QgsProcessingParameterString(self.LABEL_FIELD, self.tr("Class field (polygon labels)"), optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.CODE_MAPPING, self.tr("Class mapping (your code:model class, e.g. 10:1,20:2,99:ignore; empty = 0-4)"), optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.FACTORS, self.tr("Input factors"), FACTORS, True, [0]))
        self.add_options(ChipConfig)
        self.addParameter(QgsProcessingParameterEnum(self.ARCHITECTURE, self.tr("Network"),
                                                     [self.tr(PRESET_LABELS[a]) for a in ARCHITECTURES], False, 0))
        self.addParameter(QgsProcessingParameterFile(
            self.ENCODER_WEIGHTS, self.tr("Encoder weights (local .safetensors; empty = random)"),
            QgsProcessingParameterFile.Behavior.File, "safetensors", None, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.INIT_MODEL, self.tr("Fine-tune this landform model (.safetensors; empty = a new network)"),
            QgsProcessingParameterFile.Behavior.File, "safetensors", None, optional=True))
        self.add_options(TrainConfig)
        resume = QgsProcessingParameterBoolean(self.RESUME, self.tr("Resume from the checkpoint beside the model file"), False)
        resume.setFlags(resume.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(resume)
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), DEVICES, False, 0))
        chips = QgsProcessingParameterFolderDestination(self.CHIPS, self.tr("Chip folder (numpy + JSON)"), optional=True, createByDefault=False)
        self.addParameter(chips)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, self.tr("Model file"), self.tr("Landform model (*.safetensors)")))
        self.addOutput(QgsProcessingOutputFile(self.LOG_CSV, self.tr("Per-epoch log (CSV)")))
        self.addOutput(QgsProcessingOutputFile(self.CURVE_PNG, self.tr("Training curves (PNG)")))
        self.addOutput(QgsProcessingOutputFile(self.CONFUSION_CSV, self.tr("Validation confusion matrix (CSV)")))
        self.addOutput(QgsProcessingOutputFile(self.CONFUSION_PNG, self.tr("Validation confusion matrix (PNG)")))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_PA, self.tr("Validation PA [%]")))
        self.addOutput(QgsProcessingOutputNumber(self.VAL_MIOU, self.tr("Validation MIoU [%]")))
        self.addOutput(QgsProcessingOutputNumber(self.CHIP_COUNT, self.tr("Number of chips")))

    def process(self, parameters, context, feedback):
        dems = self.parameterAsLayerList(parameters, self.DEMS, context)
        if not dems:
            raise LandformError("Give at least one DEM.")
        dem_paths = [layer_file(layer, "DEM") for layer in dems]
        labels_layer = self.parameterAsLayer(parameters, self.LABELS, context)
        labels = layer_file(labels_layer, "label layer")
        field = (self.parameterAsString(parameters, self.LABEL_FIELD, context) or "").strip() or None
        if labels_layer.type() == QgsMapLayer.LayerType.VectorLayer and not field:
            names = ", ".join(f.name() for f in labels_layer.fields())
            raise LandformError(f"The labels are polygons: give the class field (one of {names}).")
        if labels_layer.type() == QgsMapLayer.LayerType.RasterLayer:
            field = None
        out = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not out.lower().endswith(".safetensors"):
            out = os.path.splitext(out)[0] + ".safetensors"
        from ...core.errors import import_torch

        import_torch()  # clear install hint before any work
        from ...core import chips as chips_mod
        from ...core import train as train_mod

        progress = self.progress_from(feedback)
        chip_dir = self.parameterAsString(parameters, self.CHIPS, context).strip()
        if not chip_dir or chip_dir.upper() == "TEMPORARY_OUTPUT":
            chip_dir = os.path.join(tempfile.mkdtemp(prefix="landform_chips_"), "chips")
        factor_idx = self.parameterAsEnums(parameters, self.FACTORS, context) or [0]
        factors = [FACTORS[i] for i in sorted(factor_idx)]
        manifest = chips_mod.export_chips(
            ChipConfig(
                dems=dem_paths, labels=labels, out_dir=chip_dir, label_field=field,
                code_mapping=chips_mod.parse_mapping(self.parameterAsString(parameters, self.CODE_MAPPING, context)),
                factors=factors, seed=self.parameterAsInt(parameters, self.SEED, context),
                **self.read_options(ChipConfig, parameters, context),
            ),
            progress.sub(0, 15),
        )
        progress.info(f"{len(manifest['chips'])} chips in {chip_dir}")
        cfg = train_mod.TrainConfig(
            chips=chip_dir, out=out,
            architecture=ARCHITECTURES[self.parameterAsEnum(parameters, self.ARCHITECTURE, context)],
            encoder_weights=(self.parameterAsFile(parameters, self.ENCODER_WEIGHTS, context) or "").strip() or None,
            init_model=(self.parameterAsFile(parameters, self.INIT_MODEL, context) or "").strip() or None,
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            resume="auto" if self.parameterAsBool(parameters, self.RESUME, context) else None,
            **self.read_options(TrainConfig, parameters, context),
        )
        res = train_mod.train(cfg, progress.sub(15, 100))
        return {
            self.OUTPUT: res.model_path,
            self.CHIPS: chip_dir,
            self.LOG_CSV: res.files["log_csv"],
            self.CURVE_PNG: res.files["curve_png"],
            self.CONFUSION_CSV: res.files["confusion_csv"],
            self.CONFUSION_PNG: res.files["confusion_png"],
            self.VAL_PA: round(100.0 * res.val_scores.pa, 4),
            self.VAL_MIOU: round(100.0 * res.val_scores.miou, 4),
            self.CHIP_COUNT: len(manifest["chips"]),
        }
