"""The dependency installer's core with real pip and the system Python (which has no torch).

Failure paths: no wheels for the request, a wheel for another Python, no
network, a refusing proxy, cancellation while pip waits; and a dependency
folder from another Python version ignored with a notice.
"""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from landform_plugin.core import deps, pip_install
from landform_plugin.core.errors import Cancelled, LandformError
from landform_plugin.core.progress import Progress

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # the Python Debian's QGIS embeds; `make setup` leaves torch out of it


@pytest.fixture(scope="module")
def system_python():
    out = subprocess.run([SYSTEM_PYTHON, "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "True", "these tests need a system Python without torch"
    return SYSTEM_PYTHON


def test_pins_are_the_tested_versions():
    pinned = dict(re.findall(r"^(torch|torchvision|safetensors)==(\S+)", (REPO / "requirements.txt").read_text(), re.M))
    assert pinned == deps.PINS


def test_find_python_is_this_interpreter():
    exe = deps.find_python()
    assert deps.probe_python(exe) == (tuple(sys.version_info[:2]), sys.prefix)


def test_candidates_never_the_qgis_binary():
    linux = deps.python_candidates("/usr/bin/qgis", "/usr/bin/qgis", "/usr", "/usr", "linux", (3, 11))
    assert linux[:2] == ["/usr/bin/python3.11", "/usr/bin/python3"]
    assert not any(c.endswith("qgis") for c in linux)
    osgeo4w = deps.python_candidates(r"C:\OSGeo4W\bin\qgis-bin.exe", "", r"C:\OSGeo4W\apps\Python312",
                                     r"C:\OSGeo4W\apps\Python312", "win32", (3, 12))
    assert osgeo4w[0] == r"C:\OSGeo4W\apps\Python312\python.exe"
    assert r"C:\OSGeo4W\bin\python3.exe" in osgeo4w
    mac = deps.python_candidates("/Applications/QGIS.app/Contents/MacOS/QGIS", "", "/x/Python.framework/Versions/3.12",
                                 "/x/Python.framework/Versions/3.12", "darwin", (3, 12))
    assert mac[0] == "/x/Python.framework/Versions/3.12/bin/python3.12"
    assert "/Applications/QGIS.app/Contents/MacOS/bin/python3" in mac


def _fake_install(folder: Path, python="3.11"):
    folder.mkdir(parents=True)
    (folder / deps.MARKER).write_text(json.dumps({"python": python}))


def test_activate_puts_this_python_first_and_ignores_another_version(tmp_path):
    root = deps.deps_root(tmp_path)
    _fake_install(root / deps.python_tag())
    _fake_install(root / "3.9", "3.9")
    path = ["/usr/lib/python3/dist-packages"]
    activation = deps.activate(tmp_path, path=path)
    assert path == [str(root / deps.python_tag()), "/usr/lib/python3/dist-packages"]
    assert activation.folder == root / deps.python_tag()
    assert len(activation.notices) == 1 and "installed for Python 3.9" in activation.notices[0]
    assert str(root / "3.9") not in path
    deps.activate(tmp_path, path=path)
    assert len(path) == 2  # idempotent


def test_unfinished_folder_is_not_used(tmp_path):
    (deps.deps_dir(tmp_path) / "torch").mkdir(parents=True)
    path = []
    activation = deps.activate(tmp_path, path=path)
    assert path == [] and activation.folder is None
    assert "unfinished" in activation.notices[0]


NVIDIA_SMI = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 3060        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------+------------------------+----------------------+
"""


def test_gpu_and_cuda_build_from_nvidia_smi():
    gpu = deps.parse_nvidia_smi(NVIDIA_SMI)
    assert (gpu.name, gpu.driver, gpu.cuda) == ("NVIDIA GeForce RTX 3060", "550.54.15", (12, 4))
    with pytest.raises(LandformError, match="driver .* too old"):
        deps.cuda_build_for(gpu)  # 12.4 < the oldest CUDA build of torch 2.14
    assert deps.cuda_build_for(deps.Gpu("x", "580", (13, 1))) == "cu130"
    assert deps.cuda_build_for(deps.Gpu("x", "570", (12, 8))) == "cu128"
    assert deps.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the driver") is None


def _leftovers(profile):
    return sorted(p.name for p in deps.deps_root(profile).iterdir())


def test_no_wheels_for_the_request(system_python, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with pytest.raises(LandformError) as err:
        pip_install.install(tmp_path / "profile", pip_install.Request(wheels=str(wheels)), python=system_python)
    assert str(err.value).startswith(f"No matching wheel for torch=={deps.PINS['torch']} (Python {deps.python_tag()}")
    assert str(wheels) in str(err.value)
    assert _leftovers(tmp_path / "profile") == ["install.log"]  # no temporary folder, no dependency folder
    log = (deps.deps_root(tmp_path / "profile") / "install.log").read_text()
    assert "No matching distribution found for torch==" in log and "Stopped:" in log


def _tiny_wheel(folder: Path, name, version, requires_python):
    """A real wheel file (metadata only) whose Requires-Python excludes this Python."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 f"Requires-Python: {requires_python}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
        zf.writestr(f"{info}/RECORD", "\n".join(f"{a},," for a in [*files, f"{info}/RECORD"]) + "\n")


def test_wheels_for_another_python_say_so(system_python, tmp_path):
    for name, version in deps.PINS.items():
        _tiny_wheel(tmp_path / "wheels", name, version, ">=3.99")
    with pytest.raises(LandformError, match=rf"^No wheels for Python {deps.python_tag()}"):
        pip_install.install(tmp_path / "profile", pip_install.Request(wheels=str(tmp_path / "wheels")),
                            python=system_python)
    assert _leftovers(tmp_path / "profile") == ["install.log"]


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network(system_python, tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/wheels/"
    with pytest.raises(LandformError, match="^No network: pip could not reach"):
        pip_install.install(tmp_path / "profile", pip_install.Request(wheels=url), python=system_python)
    assert _leftovers(tmp_path / "profile") == ["install.log"]


def test_proxy_refusing(system_python, tmp_path, monkeypatch):
    request = pip_install.Request(proxy=f"http://127.0.0.1:{_closed_port()}")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "PIP_FIND_LINKS", "PIP_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # this machine's local mirrors would answer without a proxy
    with pytest.raises(LandformError, match="^The proxy refused the connection"):
        pip_install.install(tmp_path / "profile", request, python=system_python)
    assert _leftovers(tmp_path / "profile") == ["install.log"]


def test_cancel_stops_pip_and_leaves_nothing(system_python, tmp_path):
    """pip waits on a wheel page that never answers; cancelling must stop it at once."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    asked = threading.Event()
    conns = []

    def serve():
        conn, _ = server.accept()  # accept, read the request, never answer
        conns.append(conn)
        conn.recv(4096)
        asked.set()

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/wheels/"
    progress = Progress(is_cancelled=asked.is_set)
    start = time.monotonic()
    try:
        with pytest.raises(Cancelled):
            pip_install.install(tmp_path / "profile", pip_install.Request(wheels=url), progress, python=system_python)
    finally:
        server.close()
        for c in conns:
            c.close()
    assert time.monotonic() - start < 60  # pip's own timeout is longer: we stopped it
    log = (deps.deps_root(tmp_path / "profile") / "install.log").read_text()
    pid = int(re.search(r"\(pid (\d+)\)", log).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "Cancelled by the user: pip stopped." in log
    assert _leftovers(tmp_path / "profile") == ["install.log"]


def test_check_reports_a_missing_torch(system_python, tmp_path):
    report = pip_install.check(tmp_path, python=system_python)
    assert report["installed"] is None and report["python"] == system_python
    assert "No module named 'torch'" in report["torch"]["error"]
    text = pip_install.format_check(report)
    assert "(not installed)" in text and "PyTorch: not importable" in text


def test_disk_space_is_checked_before_pip_writes(tmp_path):
    free = __import__("shutil").disk_usage(tmp_path).free
    too_big = [pip_install.Package("torch", "2.14.1", "file:///x.whl", size=int(free))]
    with pytest.raises(LandformError, match=r"^Not enough disk space in .*GB free, about .*GB needed"):
        pip_install._check_disk(tmp_path, too_big)
    pip_install._check_disk(tmp_path, [pip_install.Package("torch", "2.14.1", "file:///x.whl", size=1000)])


def test_check_names_a_second_torch(tmp_path):
    """The venv running this test has torch: with a plugin folder installed, check calls it a conflict."""
    import importlib.metadata

    _fake_install(deps.deps_dir(tmp_path), deps.python_tag())
    report = pip_install.check(tmp_path)
    site = [c for c in report["conflicts"] if c.startswith(f"another torch {importlib.metadata.version('torch')} in ")]
    assert len(site) == 1 and site[0].endswith("(shadowed by the plugin's folder)")
    assert "Conflict: another torch" in pip_install.format_check(report)


def test_reinstall_swaps_folders_and_leaves_no_copy(tmp_path):
    final = deps.deps_dir(tmp_path)
    _fake_install(final)
    (final / "old.txt").write_text("old")
    target = tmp_path / "target"
    _fake_install(target)
    (target / "new.txt").write_text("new")
    pip_install._move_into_place(target, final)
    assert sorted(p.name for p in final.iterdir()) == [deps.MARKER, "new.txt"]
    assert sorted(p.name for p in final.parent.iterdir()) == [deps.python_tag()]


def test_load_removes_replaced_and_dead_installs(tmp_path):
    root = deps.deps_root(tmp_path)
    for name in (".previous-abc", ".install-dead", ".install-running"):
        (root / name / "torch").mkdir(parents=True)
    day_ago = time.time() - 2 * 86400
    os.utime(root / ".install-dead", (day_ago, day_ago))
    deps.activate(tmp_path, path=[])
    assert sorted(p.name for p in root.iterdir()) == [".install-running"]
