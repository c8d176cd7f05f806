"""The provider registers with its stable id and loads every algorithm without torch."""
import subprocess
import sys


def test_provider_registered(landform_provider):
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("landform")
    assert provider is landform_provider
    assert provider.name() == "Landform classification"
    ids = {a.id() for a in provider.algorithms()}
    assert all(i.startswith("landform:") for i in ids)


def test_plugin_import_does_not_import_torch(repo_root):
    code = (
        "import sys; sys.path.insert(0, %r);"
        "from qgis.core import QgsApplication; app = QgsApplication([], False); app.initQgis();"
        "from landform_plugin.processing.provider import LandformProvider;"
        "p = LandformProvider(); QgsApplication.processingRegistry().addProvider(p);"
        "print(len(p.algorithms()), 'torch' in sys.modules)"
    ) % str(repo_root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    n, torch_loaded = out.stdout.split()[-2:]
    assert torch_loaded == "False"
