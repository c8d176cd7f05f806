"""QGIS shell of the plugin: registers the Processing provider, nothing else.

Kept free of torch and of the core's heavy imports so that loading the plugin
and ``qgis_process list`` stay fast on machines without torch.
"""
from qgis.core import QgsApplication


class LandformClassifierPlugin:
    def __init__(self, iface=None):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API)
        from .processing.provider import LandformProvider

        self.provider = LandformProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
