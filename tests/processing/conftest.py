"""Processing tests run inside real (headless) QGIS via pytest-qgis.

``landform_provider`` registers the plugin's provider once per session, as
initProcessing() does in the desktop, and returns it.
"""
import pytest


@pytest.fixture(scope="session")
def landform_provider(qgis_processing):
    from qgis.core import QgsApplication

    from landform_plugin.processing.provider import LandformProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("landform")
    if provider is None:
        provider = LandformProvider()
        assert registry.addProvider(provider)
    return provider


@pytest.fixture()
def run_alg(landform_provider):
    """Run ``landform:<name>`` with processing.run and a fresh context/feedback."""
    import processing
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    def _run(name, params, feedback=None, context=None):
        context = context or QgsProcessingContext()
        feedback = feedback or QgsProcessingFeedback()
        return processing.run(f"landform:{name}", params, context=context, feedback=feedback)

    return _run
