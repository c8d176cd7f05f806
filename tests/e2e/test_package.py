"""`make package` builds a zip that installs into a fresh QGIS profile and lists the algorithms."""
import zipfile

import pytest

from .desktop import package_plugin
from .qgis_cli import PLUGIN_NAME, QgisProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory, repo_root):
    return package_plugin(repo_root, tmp_path_factory.mktemp("dist"))


def test_zip_layout(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as zf:
        names = zf.namelist()
    assert all(n.startswith(f"{PLUGIN_NAME}/") for n in names)
    assert f"{PLUGIN_NAME}/models/default_model.safetensors" in names
    assert f"{PLUGIN_NAME}/metadata.txt" in names
    assert not [n for n in names if "/tests/" in n or "/bench/" in n or n.endswith(".pyc")]


def test_zip_installs_into_fresh_profile(plugin_zip, tmp_path):
    install_root = tmp_path / "unzipped"
    with zipfile.ZipFile(plugin_zip) as zf:
        zf.extractall(install_root)
    qp = QgisProcess(tmp_path / "qgis", plugin_source=install_root / PLUGIN_NAME)
    qp.enable()
    listing = qp.json("list")
    algs = set(listing["providers"]["landform"]["algorithms"])
    from landform_plugin.processing.algorithms import _ALGORITHMS

    assert len(algs) == len(_ALGORITHMS)
    assert "landform:classifylandforms" in algs
