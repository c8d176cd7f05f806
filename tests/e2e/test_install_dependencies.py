"""The installer end to end: QGIS's own Python without torch, a fresh profile, real pip, real QGIS.

qgis_process runs with the system Python only (the project's venv is taken off
PATH), installs torch from a wheel folder rebuilt from the venv's own packages
(tests/e2e/wheelhouse.py, no network), and then classifies a real DEM with the
default model in the same profile. Also: the failure a user with the wrong
wheels sees, a folder for another Python version ignored with a notice, and a
cancellation while pip unpacks torch leaving nothing behind.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from landform_plugin.core import deps, pip_install
from landform_plugin.core.errors import Cancelled
from landform_plugin.core.progress import Progress

from . import wheelhouse
from .qgis_cli import QgisProcess

pytestmark = pytest.mark.e2e
SYSTEM_PYTHON = "/usr/bin/python3"


def bare_qgis(root: Path) -> QgisProcess:
    """qgis_process with QGIS's own (system) Python: the venv is off PATH, so torch is not importable."""
    qp = QgisProcess(root)
    venv_bin = str(Path(sys.executable).parent)
    qp.env["PATH"] = os.pathsep.join(p for p in qp.env["PATH"].split(os.pathsep) if p and p != venv_bin)
    qp.env.pop("VIRTUAL_ENV", None)
    qp.enable()
    return qp


def profile_of(qp: QgisProcess) -> Path:
    return qp.profile / "profiles" / "default"


def run_installer(qp, *params, check=True, timeout=1200):
    proc = qp("--json", "run", "landform:installdependencies", "--", *params, check=check, timeout=timeout)
    if not check:
        return proc
    return json.loads(proc.stdout[proc.stdout.find("{"):])["results"]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """The wheel folder, rebuilt from the venv's torch, torchvision, safetensors and what they need."""
    site = Path(sysconfig.get_paths()["purelib"])
    assert (site / f"torch-{deps.PINS['torch']}.dist-info").is_dir(), f"the venv at {site} lacks the pinned torch"
    out = tmp_path_factory.mktemp("wheels")
    start = time.monotonic()
    built = wheelhouse.build(site, out)
    size = sum(p.stat().st_size for p in built)
    print(f"\nwheel folder: {len(built)} wheels, {size / 1e9:.2f} GB in {time.monotonic() - start:.0f} s")
    names = {p.name.split("-")[0] for p in built}
    assert {"torch", "torchvision", "safetensors"} <= names and "numpy" not in names
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_no_wheels_for_the_request(tmp_path):
    qp = bare_qgis(tmp_path / "qgis")
    empty = tmp_path / "wheels"
    empty.mkdir()
    proc = run_installer(qp, f"WHEELS={empty}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"No matching wheel for torch=={deps.PINS['torch']} (Python {deps.python_tag()}" in out
    assert "Traceback" not in out
    root = deps.deps_root(profile_of(qp))
    assert sorted(p.name for p in root.iterdir()) == ["install.log"]


def test_folder_of_another_python_is_ignored_with_a_notice(tmp_path):
    qp = bare_qgis(tmp_path / "qgis")
    old = deps.deps_root(profile_of(qp)) / "3.9"
    (old / "torch").mkdir(parents=True)
    (old / "torch" / "__init__.py").write_text("__version__ = '1.0-for-python-3.9'\n")
    (old / deps.MARKER).write_text(json.dumps({"python": "3.9"}))
    results = run_installer(qp, "MODE=1")
    report = results["REPORT"]
    assert f"Ignored the deep-learning packages in {old}: they were installed for Python 3.9" in report
    assert "On this session's Python path: no" in report
    assert "PyTorch: not importable (ModuleNotFoundError: No module named 'torch')" in report
    assert results["TORCH_VERSION"] == ""


@pytest.mark.slow
def test_cancel_while_pip_unpacks_leaves_nothing(wheels, tmp_path):
    """Cancelled once pip unpacks (gigabytes in flight): pip is stopped and no folder is left."""
    unpacking = []
    progress = Progress(log=lambda m: unpacking.append(m) if m.startswith("Unpacking") else None,
                        is_cancelled=lambda: bool(unpacking))
    profile = tmp_path / "profile"
    with pytest.raises(Cancelled):
        pip_install.install(profile, pip_install.Request(wheels=str(wheels)), progress, python=SYSTEM_PYTHON)
    log = (deps.deps_root(profile) / "install.log").read_text()
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", log)]
    assert len(pids) == 2  # the dry run, then the install that was stopped
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Installing collected packages" in log and "Cancelled by the user: pip stopped." in log
    assert "Successfully installed" not in log
    assert sorted(p.name for p in deps.deps_root(profile).iterdir()) == ["install.log"]


@pytest.mark.slow
def test_install_then_classify_in_a_fresh_profile(wheels, tmp_path, dems):
    qp = bare_qgis(tmp_path / "qgis")
    before = run_installer(qp, "MODE=1")
    assert "PyTorch: not importable" in before["REPORT"]  # QGIS's own Python really lacks torch

    dry = run_installer(qp, "MODE=2", f"WHEELS={wheels}")
    listed = re.findall(r"^  (\S+)==(\S+) \((\d+) MB\)$", dry["REPORT"], re.M)
    assert dry["REPORT"].startswith(f"Would install {len(listed)} package(s):") and len(listed) >= 3
    assert ("torch", deps.PINS["torch"]) in {(n, v) for n, v, _ in listed}
    assert "numpy" not in {n for n, _, _ in listed}
    assert not deps.deps_dir(profile_of(qp)).exists()  # a dry run installs nothing

    start = time.monotonic()
    results = run_installer(qp, f"WHEELS={wheels}")
    seconds = time.monotonic() - start
    folder = Path(results["FOLDER"])
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"\ninstall through qgis_process: {seconds:.0f} s, {size / 1e9:.2f} GB in {folder}")
    assert folder == deps.deps_dir(profile_of(qp))
    assert results["TORCH_VERSION"].startswith(deps.PINS["torch"]) and results["DEVICE"] == "CPU"
    assert "The deep-learning algorithms work now" in results["REPORT"]
    marker = deps.read_marker(folder)
    assert marker["python"] == deps.python_tag() and marker["verified"]["ok"] is True
    assert not (folder / "numpy").exists()  # QGIS's numpy stays the only one
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".install-")] == []
    assert "Successfully installed" in Path(results["LOG"]).read_text()

    checked = run_installer(qp, "MODE=1")
    assert f"from {folder / 'torch' / '__init__.py'}" in checked["REPORT"]
    assert checked["TORCH_VERSION"] == results["TORCH_VERSION"]

    out = tmp_path / "classes.tif"
    proc = qp("--json", "run", "landform:classifylandforms", "--", f"INPUT={dems['boulder']}", f"OUTPUT={out}",
              timeout=900)
    classified = json.loads(proc.stdout[proc.stdout.find("{"):])["results"]
    assert classified["OUTPUT"] == str(out) and classified["TILES"] >= 1
    assert "default_model.safetensors" in classified["MODEL_INFO"]
    ds = gdal.Open(str(out))  # kept in a variable: a band outliving its dataset crashes GDAL
    classes = ds.GetRasterBand(1).ReadAsArray()
    values, counts = np.unique(classes, return_counts=True)
    assert set(values.tolist()) <= {0, 1, 2, 3, 4} and counts[values > 0].sum() > 0.9 * classes.size
    assert len(values[values > 0]) >= 2  # plains and mountains on the Front Range, not one constant
    same_session = same_session_run(qp, dems["boulder"], tmp_path)
    assert "needs PyTorch and torchvision" in same_session["before"]
    assert same_session["folder"] == str(folder)
    assert same_session["after"] == str(tmp_path / "after.tif") and (tmp_path / "after.tif").exists()
    shutil.rmtree(folder, ignore_errors=True)  # 5 GB: do not keep it among pytest's temporary folders


# One QGIS session with the system Python: classification fails without torch, then works once the
# dependency folder is activated, as it is when the installer finishes in the desktop.
SAME_SESSION = """
import json, os, sys
sys.path.insert(0, os.environ["REPO"])
from qgis.core import QgsApplication, QgsProcessingException
app = QgsApplication([], False)
app.initQgis()
sys.path.append("/usr/share/qgis/python/plugins")
from processing.core.Processing import Processing
Processing.initialize()
import processing
from landform_plugin.processing.provider import LandformProvider
provider = LandformProvider()  # kept referenced, or Python deletes it
assert QgsApplication.processingRegistry().addProvider(provider)
out, params = {}, {"INPUT": os.environ["DEM"]}
try:
    processing.run("landform:classifylandforms", dict(params, OUTPUT=os.environ["BEFORE"]))
    out["before"] = "ran"
except QgsProcessingException as exc:
    out["before"] = str(exc)
from landform_plugin import dependencies
out["folder"] = str(dependencies.activate_at_load().folder)
out["after"] = processing.run("landform:classifylandforms", dict(params, OUTPUT=os.environ["AFTER"]))["OUTPUT"]
print("RESULT " + json.dumps(out))
"""


def same_session_run(qp, dem, tmp_path):
    env = dict(qp.env, REPO=str(Path(__file__).resolve().parents[2]), DEM=dem,
               BEFORE=str(tmp_path / "before.tif"), AFTER=str(tmp_path / "after.tif"))
    proc = subprocess.run([SYSTEM_PYTHON, "-c", SAME_SESSION], env=env, capture_output=True, text=True, timeout=900)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])
