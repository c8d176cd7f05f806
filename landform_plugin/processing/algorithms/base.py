"""Shared behaviour of the provider's algorithms: icon, help, error translation."""
import os
from typing import Sequence

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterRasterDestination,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ...core.errors import Cancelled, LandformError, MissingDependency
from ...core.outputs import os_error_message
from ...core.progress import Progress
from ...core.schema import options
from ...core.rasters import READ_HINT, check_output_path, open_raster

ICON = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "resources", "icon.svg"))

PAPER_CITATION = (
    "Yang, J., Xu, J., Lv, Y., Zhou, C., Zhu, Y., Cheng, W. (2023). Deep learning-based automated "
    "terrain classification using high-resolution DEM data. International Journal of Applied Earth "
    "Observation and Geoinformation (2023)."
)


def layer_file(layer, what: str) -> str:
    """The file GDAL/OGR can read behind a QGIS layer ('path|layername=x' for vector layers)."""
    if layer is None:
        raise LandformError(f"No {what} was given, or it could not be loaded.")
    provider = layer.providerType()
    if provider not in ("gdal", "ogr"):
        raise LandformError(
            f"The {what} '{layer.name()}' is a '{provider}' layer; save it to a file (GeoTIFF, GeoPackage, "
            "Shapefile) first so it can be read without QGIS."
        )
    return layer.source()


class LandformAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set name/displayName/group and implement ``process``.

    (Not ``run``: that is QgsProcessingAlgorithm's own method, which
    processing.run() calls; a subclass ``run`` would shadow it.)

    ``processAlgorithm`` checks every output location before any work and turns
    core errors into QgsProcessingException, so the user sees a sentence, never
    a traceback.
    """

    GROUP_ID = "landforms"
    GROUP = "Landforms"

    def tr(self, text):
        return QCoreApplication.translate("LandformClassifier", text)

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def group(self):
        return self.tr(self.GROUP)

    def groupId(self):  # noqa: N802 (QGIS API)
        return self.GROUP_ID

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):  # noqa: N802 (QGIS API)
        return ICON

    def helpUrl(self):  # noqa: N802 (QGIS API)
        return "https://github.com/landform-classifier/landform_classifier#readme"

    @staticmethod
    def progress_from(feedback) -> Progress:
        if feedback is None:
            return Progress()
        return Progress(
            set_progress=feedback.setProgress,
            is_cancelled=feedback.isCanceled,
            log=feedback.pushInfo,
        )

    def add_options(self, cls, only: Sequence[str] = ()) -> None:
        """Processing parameters for the ``core.schema`` options of ``cls`` (``only``: these fields)."""
        for name, default, opt in options(cls):
            if opt.processing and (not only or name in only):
                p = _parameter(opt, default, self.tr)
                if opt.advanced:
                    p.setFlags(p.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
                self.addParameter(p)

    def read_options(self, cls, parameters, context, only: Sequence[str] = ()) -> dict:
        """{field: value} of the ``core.schema`` options of ``cls`` as the user set them."""
        out = {}
        for name, _default, opt in options(cls):
            if not opt.processing or (only and name not in only):
                continue
            if opt.kind == "bool":
                value = self.parameterAsBoolean(parameters, opt.key, context)
            elif opt.kind == "choice":
                value = opt.choices[self.parameterAsEnum(parameters, opt.key, context)]
            elif opt.kind == "int":
                value = self.parameterAsInt(parameters, opt.key, context)
            elif opt.kind == "float":
                value = self.parameterAsDouble(parameters, opt.key, context)
            else:
                value = (self.parameterAsString(parameters, opt.key, context) or "").strip() or None
            out[name] = None if opt.zero_means_none and not value else value
        return out

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        try:
            self.check_destinations(parameters, context)
            return self.process(parameters, context, feedback)
        except Cancelled as exc:
            raise QgsProcessingException(self.tr(f"Cancelled: {exc}. No output was written.")) from None
        except (LandformError, MissingDependency) as exc:
            if isinstance(exc, MissingDependency):  # the desktop offers the installer in its message bar
                from ...dependencies import report_missing_torch

                report_missing_torch(self.id(), str(exc))
            raise QgsProcessingException(str(exc)) from None
        except OSError as exc:  # an output the core did not own (e.g. a disk filled up mid-run)
            raise QgsProcessingException(str(os_error_message(exc))) from None

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API)
        """QGIS's own check, with its "Incorrect parameter value" replaced by what is wrong
        with the file (missing, empty, not a raster) and what to do."""
        ok, msg = super().checkParameterValues(parameters, context)
        if ok:
            return ok, msg
        return False, self.unreadable_input(parameters) or msg

    def unreadable_input(self, parameters) -> str:
        for p in self.parameterDefinitions():
            if p.type() not in ("raster", "vector", "layer", "multilayer", "source", "file"):
                continue
            values = parameters.get(p.name())
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if isinstance(value, str) and value:
                    why = _why_unreadable(value.partition("|")[0], p.type())
                    if why:
                        return f"{p.description()} ({p.name()}): {why}"
        return ""

    def destination_paths(self, parameters, context):
        """{parameter name: path} of every destination the user set (skipped ones left out)."""
        out = {}
        for p in self.destinationParameterDefinitions():
            if isinstance(p, QgsProcessingParameterRasterDestination):
                path = self.parameterAsOutputLayer(parameters, p.name(), context)
            elif isinstance(p, QgsProcessingParameterFileDestination):
                path = self.parameterAsFileOutput(parameters, p.name(), context)
            elif isinstance(p, QgsProcessingParameterFolderDestination):
                path = (self.parameterAsString(parameters, p.name(), context) or "").strip()
            else:
                continue
            if path and path.upper() != "TEMPORARY_OUTPUT" and "://" not in path:
                out[p.name()] = path
        return out

    def input_paths(self, parameters, context):
        """Files behind the input layers and files (an output must not overwrite them)."""
        paths = []
        for p in self.parameterDefinitions():
            if p.isDestination() or p.name() not in parameters:
                continue
            kind = p.type()
            if kind in ("raster", "vector", "layer", "source"):
                layers = [self.parameterAsLayer(parameters, p.name(), context)]
            elif kind == "multilayer":
                layers = self.parameterAsLayerList(parameters, p.name(), context)
            elif kind == "file":
                paths.append(self.parameterAsFile(parameters, p.name(), context))
                continue
            else:
                continue
            paths += [layer.source().partition("|")[0] for layer in layers if layer is not None]
        return [p for p in paths if p]

    def check_destinations(self, parameters, context) -> None:
        """Every output location validated before work starts (one helper for all algorithms)."""
        destinations = self.destination_paths(parameters, context)
        if not destinations:
            return
        inputs = self.input_paths(parameters, context)
        for name, path in destinations.items():
            folder = isinstance(self.parameterDefinition(name), QgsProcessingParameterFolderDestination)
            check_output_path(path, inputs, folder=folder)

    def process(self, parameters, context, feedback):
        """The algorithm's body (subclasses implement it, as ``process`` or ``run``)."""
        raise NotImplementedError


def _why_unreadable(path: str, kind: str) -> str:
    """Why QGIS could not load ``path`` as a layer, in a sentence ("" if it looks fine or is no file)."""
    if not os.path.splitext(path)[1] and os.sep not in path:
        return ""  # a layer id or name, not a file
    if not os.path.exists(path):
        return f"The input file '{path}' does not exist; choose an existing file."
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return f"The input file '{path}' is empty (0 bytes). {READ_HINT}"
    if kind == "raster":
        try:
            open_raster(path)
        except LandformError as exc:
            return str(exc)
        return ""
    if kind in ("vector", "layer", "source", "multilayer"):
        from osgeo import gdal

        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_VECTOR | gdal.OF_READONLY)
        except RuntimeError:
            ds = None
        finally:
            gdal.PopErrorHandler()
        if ds is None:
            return f"Cannot open '{path}' as a raster or a vector layer. {READ_HINT}"
    return ""


def _parameter(opt, default, tr):
    """The Processing parameter for one ``core.schema.Option``."""
    label = tr(opt.label)
    if opt.kind == "bool":
        return QgsProcessingParameterBoolean(opt.key, label, bool(default))
    if opt.kind == "choice":
        labels = [tr(t) for t in (opt.choice_labels or opt.choices)]
        return QgsProcessingParameterEnum(opt.key, label, labels, False, list(opt.choices).index(default))
    if opt.kind in ("int", "float"):
        number = QgsProcessingParameterNumber.Type.Integer if opt.kind == "int" else QgsProcessingParameterNumber.Type.Double
        value = 0 if default is None and opt.zero_means_none else default
        lo = opt.minimum if opt.minimum is not None else -1e12
        hi = opt.maximum if opt.maximum is not None else 1e12
        value, lo, hi = (int(value), int(lo), int(hi)) if opt.kind == "int" else (float(value), lo, hi)
        return QgsProcessingParameterNumber(opt.key, label, number, value, False, lo, hi)
    return QgsProcessingParameterString(opt.key, label, default, optional=True)
