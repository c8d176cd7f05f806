"""Shared behaviour of the provider's algorithms: icon, help, error translation."""
import os

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ...core.errors import Cancelled, LandformError, MissingDependency
from ...core.progress import Progress

ICON = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "resources", "icon.svg"))

PAPER_CITATION = (
    "Yang, J., Xu, J., Lv, Y., Zhou, C., Zhu, Y., Cheng, W. (2023). Deep learning-based automated "
    "terrain classification using high-resolution DEM data. International Journal of Applied Earth "
    "Observation and Geoinformation (2023)."
)


class LandformAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set name/displayName/group and implement ``process``.

    (Not ``run``: that is QgsProcessingAlgorithm's own method, which
    processing.run() calls; a subclass ``run`` would shadow it.)

    ``processAlgorithm`` turns core errors into QgsProcessingException, so the
    user sees a sentence, never a traceback.
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

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        try:
            return self.process(parameters, context, feedback)
        except Cancelled as exc:
            raise QgsProcessingException(self.tr(f"Cancelled: {exc}. No output was written.")) from None
        except (LandformError, MissingDependency) as exc:
            if isinstance(exc, MissingDependency):  # the desktop offers the installer in its message bar
                from ...dependencies import report_missing_torch

                report_missing_torch(self.id(), str(exc))
            raise QgsProcessingException(str(exc)) from None

    def process(self, parameters, context, feedback):
        """The algorithm's body (subclasses implement it, as ``process`` or ``run``)."""
        raise NotImplementedError
