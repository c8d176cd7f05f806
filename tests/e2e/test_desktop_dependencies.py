"""The QGIS desktop without PyTorch, under Xvfb: a deep-learning algorithm fails and the message bar offers the installer.

The plugin is installed from `make package`'s zip into a fresh profile, and
QGIS runs with the system Python only (the venv off PATH), as a user's QGIS
does before PyTorch is installed. Screenshots are kept in
artifacts/desktop_dependencies/ (docs/desktop_install_dependencies.png is one).
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from landform_plugin.dependencies import TorchMissingBar

from .qgis_cli import PLUGIN_NAME
from .test_desktop import _package

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent


def test_message_bar_offers_the_installer_when_torch_is_missing(repo_root, dems, tmp_path):
    assert shutil.which("xvfb-run") and shutil.which("qgis"), "run `make setup` (xvfb, qgis)"
    profile = tmp_path / "config"
    plugin_dir = profile / "profiles" / "default" / "python" / "plugins"
    plugin_dir.mkdir(parents=True)
    with zipfile.ZipFile(_package(repo_root, tmp_path / "dist")) as zf:
        zf.extractall(plugin_dir)
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[PythonPlugins]\n{PLUGIN_NAME}=true\n")

    out = repo_root / "artifacts" / "desktop_dependencies"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        LANDFORM_DESKTOP_DEM=dems["boulder"],
        LANDFORM_DESKTOP_OUT=str(out),
        PATH=os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin),
    )
    for var in ("QT_QPA_PLATFORM", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(var, None)
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
         "--code", str(HERE / "desktop_missing_torch.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    report_path = out / "report.json"
    assert report_path.exists(), f"QGIS exited {proc.returncode} without a report:\n{proc.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, report["error"]
    assert report["plugin_loaded"] and report["torch_found"] is False
    assert report["classify_error"] is not None and not report["classes_written"]

    ours = [i for i in report["bar"] if i["title"] == "Landform classifier"]
    assert len(ours) == 1, report["bar"]
    assert ours[0]["text"] == TorchMissingBar.TEXT
    assert ours[0]["buttons"] == [["landformInstallDependencies", "Install PyTorch…"]]
    assert report["install_buttons"] == 1
    assert report["dialogs"] == [{"visible": True, "algorithm": "landform:installdependencies"}]
    assert (out / "message_bar.png").stat().st_size > 50_000
    assert (out / "installer_dialog.png").stat().st_size > 10_000
