"""QGIS shell of the plugin: registers the Processing provider and its dependency folder.

Kept free of torch and of the core's heavy imports so that loading the plugin
and ``qgis_process list`` stay fast on machines without torch. It puts the
plugin's dependency folder (see ``dependencies``) on sys.path first, so that a
torch installed by "Install deep-learning dependencies" is the one imported.
"""
from qgis.core import QgsApplication


class LandformClassifierPlugin:
    def __init__(self, iface=None):
        from .dependencies import activate_at_load

        self.iface = iface
        self.provider = None
        self.torch_bar = None
        activate_at_load()

    def initProcessing(self):  # noqa: N802 (QGIS API)
        from .processing.provider import LandformProvider

        self.provider = LandformProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API)
        self.initProcessing()
        if self.iface is not None:
            from .dependencies import TorchMissingBar

            self.torch_bar = TorchMissingBar(self.iface)

    def unload(self):
        if self.torch_bar is not None:
            self.torch_bar.unload()
            self.torch_bar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
