"""QGIS plugin entry point: QGIS calls classFactory() when it loads the plugin."""


def classFactory(iface):  # noqa: N802 (name fixed by QGIS)
    from .landform_plugin.plugin import LandformClassifierPlugin

    return LandformClassifierPlugin(iface)
