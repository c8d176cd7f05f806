"""The real QGIS desktop, under Xvfb, with the plugin installed from `make package`'s zip.

The classification runs with its results loaded; the test asserts on the
layers QGIS shows (paletted class layer with the four landform labels, styled
heatmaps) and keeps a screenshot in artifacts/desktop/desktop.png for review.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .qgis_cli import PLUGIN_NAME

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent


def _package(repo_root, out):
    proc = subprocess.run([sys.executable, str(repo_root / "tools" / "package.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return next(Path(out).glob(f"{PLUGIN_NAME}-*.zip"))


def test_desktop_classification_with_styled_layers(repo_root, dems, tmp_path):
    assert shutil.which("xvfb-run") and shutil.which("qgis"), "run `make setup` (xvfb, qgis)"
    profile = tmp_path / "config"
    plugin_dir = profile / "profiles" / "default" / "python" / "plugins"
    plugin_dir.mkdir(parents=True)
    with zipfile.ZipFile(_package(repo_root, tmp_path / "dist")) as zf:
        zf.extractall(plugin_dir)  # what "Install from ZIP" does
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[PythonPlugins]\n{PLUGIN_NAME}=true\n")

    out = repo_root / "artifacts" / "desktop"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ)
    env.update(
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        LANDFORM_DESKTOP_DEM=dems["boulder"],
        LANDFORM_DESKTOP_OUT=str(out),
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
    )
    env.pop("QT_QPA_PLATFORM", None)  # a real X display (Xvfb) this time
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
         "--code", str(HERE / "desktop_session.py")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    report_path = out / "report.json"
    assert report_path.exists(), f"QGIS exited {proc.returncode} without a report:\n{proc.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, report["error"]
    assert report["plugin_loaded"] and report["toolbox_shown"]
    assert "landform:classifylandforms" in report["algorithms"]

    layers = report["layers"]
    classes = [l for l in layers if l["renderer"] == "paletted"]
    assert len(classes) == 1, layers
    labels = {value: label for value, label, _ in classes[0]["classes"]}
    assert [labels.get(v) for v in (1, 2, 3, 4)] == ["Plain", "Platform", "Hill", "Mountain"]
    colors = {c for _, _, c in classes[0]["classes"]}
    assert len(colors) == len(classes[0]["classes"])

    assert classes[0]["visible"]  # the landform map is what the user sees first
    heatmaps = [l for l in layers if l["renderer"] == "singlebandpseudocolor"]
    assert not any(h["visible"] for h in heatmaps)  # one tick away in the Layers panel
    assert len(heatmaps) >= 5, layers  # four classes + top-class confidence
    assert all(h["min"] == 0 and h["max"] == 1 for h in heatmaps)
    assert len({h["band"] for h in heatmaps}) == len(heatmaps)  # each heatmap its own band

    shot = out / "desktop.png"
    assert shot.stat().st_size > 50_000  # a rendered window, not a blank one
