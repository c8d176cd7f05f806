"""Where the deep-learning packages live for the Python that QGIS embeds, and how to find it.

The plugin installs torch, torchvision and safetensors into a folder of its own
in the user's QGIS profile, ``<profile>/python/landform_classifier_deps/<X.Y>``,
never into QGIS's site-packages (often read-only, shared with other plugins,
and a numpy upgrade there breaks GDAL). One folder per Python version because
compiled wheels only load in the Python they were built for. No QGIS import
here: the plugin passes the profile folder in (``pip_install`` does the pip
work, this module the locations and the check).
"""
import importlib
import importlib.metadata
import json
import ntpath
import os
import posixpath
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .errors import LandformError

# The versions the test suite runs (requirements.txt; a test keeps them equal).
PINS = {"torch": "2.14.1", "torchvision": "0.29.1", "safetensors": "0.8.0"}
# torch 2.14 publishes wheels for CPython 3.10 and newer (its Requires-Python).
MIN_PYTHON = (3, 10)
FOLDER_NAME = "landform_classifier_deps"
MARKER = "landform_deps.json"  # written last into a verified install; no marker = not ours / not finished
VERSION_DIR = re.compile(r"^\d+\.\d+$")


def python_tag(version_info=None) -> str:
    """'3.11': the part of the folder name that ties it to one Python version."""
    v = version_info or sys.version_info
    return f"{v[0]}.{v[1]}"


def deps_root(profile_dir) -> Path:
    """``<profile>/python/landform_classifier_deps``: every Python version's folder."""
    return Path(profile_dir) / "python" / FOLDER_NAME


def deps_dir(profile_dir, version_info=None) -> Path:
    return deps_root(profile_dir) / python_tag(version_info)


def read_marker(folder) -> Optional[dict]:
    """The record a finished install leaves, or None when the folder is not a finished install."""
    try:
        return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass
class Activation:
    """What ``activate`` did: the folder put on sys.path (or None) and notices for the user."""

    folder: Optional[Path] = None
    notices: List[str] = field(default_factory=list)


def activate(profile_dir, path: Optional[list] = None, version_info=None) -> Activation:
    """Put this Python's dependency folder first on ``path`` (sys.path); call before torch is imported.

    First, not last: pip resolved it against QGIS's own packages, so it only
    holds what was missing or too old there (sympy, typing_extensions for
    torch), and those must win. numpy is never in it (held at QGIS's version).
    Folders for other Python versions are left alone, with a notice.
    """
    path = sys.path if path is None else path
    result = Activation()
    root = deps_root(profile_dir)
    mine = deps_dir(profile_dir, version_info)
    if not root.is_dir():
        return result
    remove_leftovers(root)
    for child in sorted(root.iterdir()):
        if child.is_dir() and VERSION_DIR.match(child.name) and child.name != mine.name:
            result.notices.append(
                f"Ignored the deep-learning packages in {child}: they were installed for Python {child.name}, "
                f"this QGIS runs Python {python_tag(version_info)}. Run 'Install deep-learning dependencies' "
                f"again (you may delete that folder)."
            )
    if mine.is_dir() and read_marker(mine) is not None:
        if str(mine) not in path:
            path.insert(0, str(mine))
            importlib.invalidate_caches()
        result.folder = mine
    elif mine.is_dir():
        result.notices.append(f"Ignored {mine}: an unfinished install (no {MARKER}).")
    return result


def remove_leftovers(root: Path, max_age_s: float = 86400) -> None:
    """Delete folders replaced by a newer install, and temporary folders of installs that died a day ago."""
    now = time.time()
    for child in root.iterdir():
        try:
            stale = child.name.startswith(".install-") and now - child.stat().st_mtime > max_age_s
            if child.is_dir() and (child.name.startswith(".previous-") or stale):
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            continue


def _looks_like_python(exe: str) -> bool:
    name = ntpath.basename(exe).lower()
    return bool(re.match(r"^python(w)?(\d+(\.\d+)?)?(\.exe)?$", name))


def python_candidates(executable=None, base_executable=None, prefix=None, exec_prefix=None,
                      platform=None, version_info=None) -> List[str]:
    """Paths where the interpreter of the running Python may be, most likely first.

    Inside QGIS ``sys.executable`` is the QGIS binary (qgis, qgis_process.bin,
    qgis-bin.exe, QGIS.app/Contents/MacOS/QGIS), so it only counts when it is a
    python. Then the interpreter beside the prefix: ``<prefix>/bin/python3.X``
    (Linux, venvs, macOS frameworks), ``<prefix>\\python.exe`` (OSGeo4W:
    apps\\Python3X), ``<OSGeo4W>\\bin\\python3.exe``, ``QGIS.app/Contents/MacOS/bin/python3``.
    """
    executable = sys.executable if executable is None else executable
    base_executable = getattr(sys, "_base_executable", "") if base_executable is None else base_executable
    prefix = sys.prefix if prefix is None else prefix
    exec_prefix = sys.exec_prefix if exec_prefix is None else exec_prefix
    platform = sys.platform if platform is None else platform
    tag = python_tag(version_info)
    osp = ntpath if platform.startswith("win") else posixpath  # paths of that system, also in tests here
    found = [e for e in (executable, base_executable) if e and _looks_like_python(e)]
    if platform.startswith("win"):
        for p in (prefix, exec_prefix):
            found += [osp.join(p, "python.exe"), osp.join(p, "python3.exe")]
        root = osp.dirname(osp.dirname(osp.normpath(prefix)))  # OSGeo4W: <root>\apps\Python3X
        found += [osp.join(root, "bin", "python3.exe"), osp.join(root, "bin", "python.exe")]
    else:
        bindir = sysconfig.get_config_var("BINDIR") if prefix == sys.prefix else None
        for d in (osp.join(prefix, "bin"), osp.join(exec_prefix, "bin"), bindir):
            if d:
                found += [osp.join(d, f"python{tag}"), osp.join(d, "python3")]
        if platform == "darwin" and ".app/" in executable:
            contents = executable[: executable.index(".app/") + 5] + "Contents"
            found += [osp.join(contents, "MacOS", "bin", f"python{tag}"), osp.join(contents, "MacOS", "bin", "python3")]
    if platform == sys.platform:
        found += [shutil.which(f"python{tag}") or "", shutil.which("python3") or ""]
    unique = []
    for exe in found:
        if exe and exe not in unique:
            unique.append(exe)
    return unique


_PROBE = "import sys, json; print(json.dumps([list(sys.version_info[:2]), sys.prefix]))"


def probe_python(exe: str, timeout: float = 30) -> Optional[tuple]:
    """((major, minor), prefix) of an interpreter, or None when it does not run."""
    if not os.path.isfile(exe):
        return None
    try:
        out = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                             **hidden_window())
        version, prefix = json.loads(out.stdout.strip().splitlines()[-1])
        return tuple(version), prefix
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def find_python(candidates: Optional[List[str]] = None) -> str:
    """The interpreter of the Python QGIS embeds: same version, preferably the same prefix.

    Checked by running each candidate: a python3 of another version would
    install wheels this QGIS cannot load.
    """
    candidates = python_candidates() if candidates is None else candidates
    want = tuple(sys.version_info[:2])
    same_version = []
    for exe in candidates:
        probed = probe_python(exe)
        if probed is None or probed[0] != want:
            continue
        if os.path.normcase(os.path.realpath(probed[1])) == os.path.normcase(os.path.realpath(sys.prefix)):
            return exe
        same_version.append(exe)
    if same_version:
        return same_version[0]
    raise LandformError(
        f"Could not find the Python {python_tag()} interpreter that QGIS uses (looked for: "
        f"{', '.join(candidates) or 'nothing'}). Install PyTorch by hand as the plugin's README describes."
    )


def hidden_window() -> dict:
    """subprocess arguments that keep a console window from flashing up on Windows."""
    if sys.platform.startswith("win"):
        return {"creationflags": 0x08000000}  # CREATE_NO_WINDOW
    return {}


@dataclass
class Gpu:
    name: str
    driver: str
    cuda: tuple  # the highest CUDA version the driver supports, e.g. (12, 4)

    def describe(self) -> str:
        return f"{self.name} (driver {self.driver}, CUDA {self.cuda[0]}.{self.cuda[1]})"


def parse_nvidia_smi(text: str) -> Optional[Gpu]:
    """The first GPU, its driver and the driver's CUDA version, from ``nvidia-smi`` output."""
    cuda = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text)
    driver = re.search(r"Driver Version:\s*([\d.]+)", text)
    name = re.search(r"^\|\s+\d+\s+(.+?)\s{2,}(?:On|Off)\s+\|", text, re.M)
    if not cuda:
        return None
    return Gpu(name.group(1).strip() if name else "NVIDIA GPU", driver.group(1) if driver else "?",
               (int(cuda.group(1)), int(cuda.group(2))))


def detect_gpu(timeout: float = 20) -> Optional[Gpu]:
    """An NVIDIA GPU with a working driver, or None (no nvidia-smi, no GPU, driver broken)."""
    exe = shutil.which("nvidia-smi")
    if exe is None and sys.platform.startswith("win"):
        candidate = os.path.join(os.environ.get("SystemRoot", r"C:\Windows"), "System32", "nvidia-smi.exe")
        exe = candidate if os.path.isfile(candidate) else None
    if exe is None:
        return None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=timeout, **hidden_window())
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else None


# torch 2.14's CUDA builds on download.pytorch.org, newest first: (minimum driver CUDA, index tag).
CUDA_BUILDS = (((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"))


def cuda_build_for(gpu: Gpu) -> str:
    """The newest torch CUDA build the driver can run."""
    for minimum, tag in CUDA_BUILDS:
        if tuple(gpu.cuda) >= minimum:
            return tag
    oldest = CUDA_BUILDS[-1][0]
    raise LandformError(
        f"The NVIDIA driver of {gpu.describe()} is too old for PyTorch {PINS['torch']}'s CUDA builds "
        f"(they need CUDA {oldest[0]}.{oldest[1]} or newer). Update the driver, or install the CPU variant."
    )


def torch_elsewhere(path: Optional[list] = None, ours: Optional[Path] = None) -> List[tuple]:
    """(folder, version) of every torch installed on ``path`` outside our folder: possible conflicts."""
    path = sys.path if path is None else path
    found = []
    for entry in path:
        if not entry or (ours is not None and os.path.normcase(entry) == os.path.normcase(str(ours))):
            continue
        try:
            for dist in importlib.metadata.distributions(path=[entry]):
                if (dist.metadata["Name"] or "").lower() == "torch":
                    found.append((entry, dist.version))
        except OSError:
            continue
    return found
