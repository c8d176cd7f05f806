"""The ``landform`` Processing provider."""
import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import algorithm_classes

METADATA = os.path.join(os.path.dirname(__file__), "..", "..", "metadata.txt")
ICON_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "resources", "icon.svg")


class LandformProvider(QgsProcessingProvider):
    def id(self):
        return "landform"

    def name(self):
        return "Landform classification"

    def longName(self):  # noqa: N802 (QGIS API)
        return "Landform classification (FCN-ResNet, Yang et al. 2023)"

    def icon(self):
        return QIcon(os.path.normpath(ICON_PATH))

    def svgIconPath(self):  # noqa: N802 (QGIS API)
        return os.path.normpath(ICON_PATH)

    def versionInfo(self):  # noqa: N802 (QGIS API)
        return _plugin_version()

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 (QGIS API)
        # Every raster output is written by core.rasters.GeoTiffWriter.
        return ["tif"]

    def defaultRasterFileExtension(self):  # noqa: N802 (QGIS API)
        return "tif"

    def loadAlgorithms(self):  # noqa: N802 (QGIS API)
        for cls in algorithm_classes():
            self.addAlgorithm(cls())


def _plugin_version():
    """The version from metadata.txt (the one place it is written)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.normpath(METADATA), encoding="utf-8")
    return parser.get("general", "version", fallback="")
