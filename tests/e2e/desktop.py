"""Starting the real QGIS desktop for a test: the plugin installed from `make package`'s zip
into a fresh profile, QGIS under Xvfb running a script of this folder (``qgis --code``),
and the JSON report that script writes."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .qgis_cli import PLUGIN_NAME

HERE = Path(__file__).resolve().parent


def package_plugin(repo_root, out) -> Path:
    """`make package`'s zip, built into ``out``."""
    proc = subprocess.run([sys.executable, str(repo_root / "tools" / "package.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    zips = list(Path(out).glob(f"{PLUGIN_NAME}-*.zip"))
    assert len(zips) == 1
    return zips[0]


def install_into_profile(repo_root, tmp_path) -> Path:
    """A fresh QGIS profile folder with the packaged plugin installed and enabled."""
    profile = tmp_path / "config"
    plugin_dir = profile / "profiles" / "default" / "python" / "plugins"
    plugin_dir.mkdir(parents=True)
    with zipfile.ZipFile(package_plugin(repo_root, tmp_path / "dist")) as zf:
        _assert_holds_every_module(zf, Path(repo_root))
        zf.extractall(plugin_dir)  # what "Install from ZIP" does
    _assert_imports(plugin_dir)
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[PythonPlugins]\n{PLUGIN_NAME}=true\n")
    return profile


def _assert_holds_every_module(zf: zipfile.ZipFile, repo_root: Path) -> None:
    """Fail here, not after QGIS's 600 s timeout: a plugin module missing from the zip (the zip
    holds the files git tracks) makes QGIS show a modal import-error dialog that nobody closes."""
    names = set(zf.namelist())
    missing = [str(p.relative_to(repo_root)) for p in sorted((repo_root / "landform_plugin").rglob("*.py"))
               if "__pycache__" not in p.parts and f"{PLUGIN_NAME}/{p.relative_to(repo_root).as_posix()}" not in names]
    assert not missing, f"not in the package (the zip holds what git tracks: git add them): {', '.join(missing)}"


IMPORT_ALL = """
import importlib, pkgutil, sys
sys.path.insert(0, sys.argv[1])
pkg = importlib.import_module(sys.argv[2])
for m in pkgutil.walk_packages(pkg.__path__, sys.argv[2] + "."):
    importlib.import_module(m.name)
"""


def _assert_imports(plugin_dir: Path) -> None:
    """Every module of the installed plugin imports (in this Python, headless): an import error
    found here takes seconds; inside QGIS it is a modal dialog and the run's 600 s timeout."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL, str(plugin_dir), PLUGIN_NAME], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the packaged plugin does not import:\n{proc.stderr[-3000:]}"


def run_desktop(script: str, profile: Path, dem: str, out: Path, venv: bool = True) -> dict:
    """Run QGIS under Xvfb with ``script`` (a file of this folder) and return its report.

    ``venv``: the virtualenv's Python tools first on PATH; False: the venv off PATH, as a
    user's QGIS is before PyTorch is installed. ``out`` is emptied first.
    """
    assert shutil.which("xvfb-run") and shutil.which("qgis"), "run `make setup` (xvfb, qgis)"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and (venv or p != venv_bin)]
    env.update(
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        LANDFORM_DESKTOP_DEM=dem,
        LANDFORM_DESKTOP_OUT=str(out),
        LANDFORM_DESKTOP_SCRIPTS=str(HERE),  # where the script finds desktop_script.py
        PATH=os.pathsep.join(([venv_bin] if venv else []) + path),
    )
    for var in ("QT_QPA_PLATFORM", "PYTHONPATH") + (() if venv else ("VIRTUAL_ENV",)):
        env.pop(var, None)  # a real X display (Xvfb) this time
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo", "--noversioncheck",
         "--code", str(HERE / script)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    report_path = out / "report.json"
    assert report_path.exists(), f"QGIS exited {proc.returncode} without a report:\n{proc.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    assert "error" not in report, report["error"]
    return report
