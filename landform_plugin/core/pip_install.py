"""Install torch, torchvision and safetensors with pip into the plugin's dependency folder.

pip runs as a subprocess of the Python QGIS embeds (``deps.find_python``), in
two steps: a dry run against QGIS's own packages (``--dry-run --report``)
names exactly what is missing there, with numpy held at QGIS's version; then
``pip install --target <temporary folder> --no-deps`` installs that list. The
folder moves into place only after torch imports from it in a fresh process,
so a cancelled or failed run leaves nothing behind but its log. No QGIS import.
"""
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

from . import deps
from .errors import Cancelled, LandformError
from .progress import Progress

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/{tag}"
# Installed size / wheel size, measured on torch 2.14.1's Linux wheels with their dependencies (x2.0)
# plus room for pip's own unpacking.
DISK_FACTOR = 2.5
LOG_NAME = "install.log"
VERIFY_CODE = r"""
import json, sys
r = {"python": sys.version.split()[0]}
try:
    import torch, torchvision, safetensors
    r.update(torch=torch.__version__, torch_file=torch.__file__, torchvision=torchvision.__version__,
             safetensors=safetensors.__version__, cuda=bool(torch.cuda.is_available()), cuda_build=torch.version.cuda)
    r["device"] = torch.cuda.get_device_name(0) if r["cuda"] else "CPU"
    x = torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
    r["ok"] = float(x.sum()) == 36.0
except Exception as exc:
    r["error"] = f"{type(exc).__name__}: {exc}"
print("LANDFORM_DEPS " + json.dumps(r))
"""


@dataclass
class Request:
    """What to install: the variant ('cpu' or 'cuda', with the CUDA build tag) and an optional wheel folder."""

    variant: str = "cpu"
    wheels: Optional[str] = None  # a folder (or a URL of a wheel page, as pip's --find-links takes)
    cuda_tag: Optional[str] = None
    proxy: Optional[str] = None  # QGIS's HTTP proxy, for pip when online

    def source_args(self, platform: str = sys.platform) -> List[str]:
        """pip's index arguments: a local wheel folder only, or PyPI plus PyTorch's index for the variant."""
        if self.wheels:
            return ["--no-index", "--find-links", str(self.wheels)]
        if self.variant == "cuda":
            return ["--extra-index-url", CUDA_INDEX.format(tag=self.cuda_tag)]
        # PyPI's Linux torch is the CUDA build (about 5 GB); PyTorch's CPU index has a ~200 MB one.
        return [] if platform == "darwin" else ["--extra-index-url", CPU_INDEX]

    def describe(self) -> str:
        where = f"the wheel folder {self.wheels}" if self.wheels else "the internet (PyPI and PyTorch's index)"
        kind = f"CUDA ({self.cuda_tag})" if self.variant == "cuda" else "CPU"
        return f"{kind} variant from {where}"


@dataclass
class Package:
    name: str
    version: str
    url: str
    size: Optional[int] = None  # bytes of the wheel, when known

    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def requirements() -> List[str]:
    return [f"{name}=={version}" for name, version in deps.PINS.items()]


def pip_env(workdir: Path, request: Request) -> dict:
    """The environment pip runs in: unbuffered, temp files beside the target (same disk, so pip's moves are renames).

    Online, the user's pip settings (proxy, mirror, certificates) apply. From a
    wheel folder they do not: that folder and nothing else, as the user chose.
    """
    env = dict(os.environ)
    if request.wheels:
        env = {k: v for k, v in env.items() if not k.upper().startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    elif request.proxy and not (env.get("HTTPS_PROXY") or env.get("https_proxy")):
        env.update(HTTPS_PROXY=request.proxy, HTTP_PROXY=request.proxy)
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PIP_NO_INPUT="1", PIP_PROGRESS_BAR="off",
               PIP_DISABLE_PIP_VERSION_CHECK="1", TMPDIR=str(workdir), TEMP=str(workdir), TMP=str(workdir))
    return env


def _kill(proc: subprocess.Popen) -> None:
    """Stop pip and anything it started; wait for it so nothing writes after we clean up."""
    if proc.poll() is not None:
        return
    try:
        if sys.platform.startswith("win"):
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


def run_logged(cmd, log, progress: Progress, env=None, on_line=None) -> tuple:
    """Run ``cmd``, copying its output to ``log`` line by line; stop it when the user cancels.

    Returns (exit code, output lines). Raises Cancelled after pip is stopped.
    """
    log.write(f"\n$ {subprocess.list2cmdline([str(c) for c in cmd])}\n")
    log.flush()
    extra = {} if sys.platform.startswith("win") else {"start_new_session": True}
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                            env=env, bufsize=1, **extra, **deps.hidden_window())
    log.write(f"(pid {proc.pid})\n")
    lines: "queue.Queue[Optional[str]]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout] + [lines.put(None)], daemon=True)
    reader.start()
    output = []
    try:
        while True:
            if progress.cancelled():
                _kill(proc)
                log.write("Cancelled by the user: pip stopped.\n")
                raise Cancelled("Cancelled by the user; nothing was installed")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                break
            output.append(line.rstrip("\n"))
            log.write(line)
            log.flush()
            if on_line is not None:
                on_line(output[-1])
    finally:
        _kill(proc)
        reader.join(timeout=10)
        proc.stdout.close()
    return proc.wait(), output


def _size_of(url: str, proxy: Optional[str] = None) -> Optional[int]:
    """A wheel's size: the file for file:// URLs, Content-Length of a HEAD request otherwise."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        try:
            return os.path.getsize(urllib.request.url2pathname(parsed.path))
        except OSError:
            return None
    try:
        req = urllib.request.Request(url.split("#")[0], method="HEAD")
        handlers = [urllib.request.ProxyHandler({"http": proxy, "https": proxy})] if proxy else []
        with urllib.request.build_opener(*handlers).open(req, timeout=15) as resp:
            return int(resp.headers.get("Content-Length") or 0) or None
    except (OSError, ValueError):
        return None


def numpy_constraint(python: str) -> Optional[str]:
    """'numpy==<QGIS's version>', so no resolution can upgrade the numpy GDAL was built against."""
    out = subprocess.run([python, "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                         text=True, timeout=120, **deps.hidden_window())
    version = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
    return f"numpy=={version}" if version else None


def resolve(python: str, request: Request, workdir: Path, log, progress: Progress) -> List[Package]:
    """What pip would add to QGIS's Python for the pinned packages (a dry run, nothing installed)."""
    constraints = workdir / "constraints.txt"
    constraint = numpy_constraint(python)
    constraints.write_text((constraint or "") + "\n", encoding="utf-8")
    log.write(f"Constraint: {constraint or 'none (QGIS has no numpy)'}\n")
    report = workdir / "report.json"
    cmd = [python, "-m", "pip", "install", "--dry-run", "--report", report, "--constraint", constraints,
           *request.source_args(), *requirements()]
    seen = [0]

    def on_line(line):
        if line.startswith(("Collecting ", "Processing ")):
            seen[0] += 1
            progress.update(min(90.0, 5.0 * seen[0]))
            progress.info(line)

    code, output = run_logged(cmd, log, progress, env=pip_env(workdir, request), on_line=on_line)
    if code != 0 or not report.exists():
        raise LandformError(explain_failure(output, request, python))
    try:
        planned = json.loads(report.read_text(encoding="utf-8")).get("install", [])
    except (OSError, ValueError) as exc:
        raise LandformError(f"pip's dry run wrote no readable report ({exc}); the log {log.name} has its output.")
    packages = []
    for item in planned:
        meta, info = item.get("metadata", {}), item.get("download_info", {})
        packages.append(Package(meta.get("name", "?"), meta.get("version", "?"), info.get("url", "")))
    for p in packages:  # for the dry run's listing and the disk-space check
        p.size = _size_of(p.url, None if request.wheels else request.proxy)
    progress.update(100)
    return packages


# (pattern in pip's output, message); the first that matches explains the failure.
FAILURES = [
    (r"No space left on device|Errno 28", "Not enough disk space in {root} ({free} free). Free some space "
     "(PyTorch with its dependencies needs several GB) and run the installer again."),
    (r"ProxyError|Cannot connect to proxy|407 Proxy Authentication|Tunnel connection failed",
     "The proxy refused the connection. Check the proxy in QGIS (Settings > Options > Network) or the "
     "HTTPS_PROXY variable, or install from a wheel folder prepared on another machine."),
    (r"CERTIFICATE_VERIFY_FAILED|SSLError|SSL: ",
     "A secure connection to the package index failed (often a company proxy that inspects HTTPS). Ask your "
     "IT for pip's certificate settings, or install from a wheel folder prepared on another machine."),
    (r"NewConnectionError|Temporary failure in name resolution|Name or service not known|Network is unreachable|"
     r"getaddrinfo failed|No route to host|Connection refused|Read timed out|ConnectTimeoutError",
     "No network: pip could not reach the package index. Connect to the internet, set the proxy in QGIS "
     "(Settings > Options > Network), or install from a wheel folder (the WHEELS parameter) prepared on "
     "another machine with: pip download {pins} --python-version {pyver} --only-binary=:all: -d wheels"),
    (r"requires a different Python: |require a different python version:.*(?:"
     + "|".join(re.escape(v) for v in deps.PINS.values()) + ")",
     "No wheels for Python {pyver}: PyTorch {torch} supports other Python versions. Use a QGIS build with "
     "Python {minimum} or newer (the current LTR does), or install PyTorch by hand."),
    (r"No matching distribution found for|Could not find a version that satisfies",
     "No matching wheel for {missing} (Python {pyver}, {platform}) in {source}. {hint}"),
    (r"ResolutionImpossible|conflicting dependencies",
     "pip found no set of versions that fit together for {missing} in {source}: {conflict}"),
    (r"No module named pip",
     "The Python that QGIS uses ({python}) has no pip. Install it (on Debian/Ubuntu: 'sudo apt install "
     "python3-pip') and run the installer again."),
]


def explain_failure(output: List[str], request: Request, python: str, root=None) -> str:
    """A sentence for the user from pip's output; the log keeps the details."""
    text = "\n".join(output)
    missing = re.findall(r"No matching distribution found for (\S+)", text)
    conflict = " ".join(l.strip() for l in output if l.startswith("    ")) or "see the log"
    root = Path(root) if root else None
    free = f"{shutil.disk_usage(root).free / 1e9:.1f} GB" if root and root.exists() else "little"
    hint = ("The folder must hold wheels for this Python and system of every package the dry run lists "
            "(run the installer in dry-run mode on a connected machine to see them)." if request.wheels else
            "Check the variant, or the network.")
    values = dict(root=root or "the profile folder", free=free, pins=" ".join(requirements()),
                  pyver=deps.python_tag(), torch=deps.PINS["torch"], minimum=".".join(map(str, deps.MIN_PYTHON)),
                  missing=", ".join(missing) or "the pinned packages", platform=sys.platform,
                  source=request.wheels or "the package index", hint=hint, python=python,
                  conflict=conflict)
    for pattern, message in FAILURES:
        if re.search(pattern, text):
            return message.format(**values)
    errors = [l for l in output if l.startswith("ERROR")] or output[-3:]
    return "pip failed: " + " ".join(e.strip() for e in errors)[:600]


def verify(python: str, folder: Optional[Path], timeout: float = 600) -> dict:
    """Import torch, torchvision and safetensors in a fresh Python with ``folder`` first on its path."""
    env = dict(os.environ)
    if folder is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(folder)] + [p for p in [env.get("PYTHONPATH")] if p])
    try:
        out = subprocess.run([python, "-c", VERIFY_CODE], capture_output=True, text=True, env=env,
                             timeout=timeout, **deps.hidden_window())
    except subprocess.TimeoutExpired:
        return {"error": f"importing torch took more than {timeout:.0f} s"}
    for line in out.stdout.splitlines():
        if line.startswith("LANDFORM_DEPS "):
            return json.loads(line[len("LANDFORM_DEPS "):])
    return {"error": (out.stderr.strip().splitlines() or ["python exited without a report"])[-1]}


def _check_disk(root: Path, packages: List[Package]) -> None:
    known = sum(p.size or 0 for p in packages)
    free = shutil.disk_usage(root).free
    if known and free < DISK_FACTOR * known:
        raise LandformError(
            f"Not enough disk space in {root}: {free / 1e9:.1f} GB free, about {DISK_FACTOR * known / 1e9:.1f} GB "
            f"needed. Free some space and run the installer again."
        )


def _pip_target(python, request, packages, target, workdir, log, progress):
    """``pip install --target`` of exactly the resolved list; progress from the lines pip prints."""
    cmd = [python, "-m", "pip", "install", "--target", target, "--no-deps", "--no-warn-script-location",
           *request.source_args(), *[p.pin() for p in packages]]
    done = [0]

    def on_line(line):
        if line.startswith(("Collecting ", "Processing ")):
            done[0] += 1
            progress.update(80.0 * done[0] / max(1, len(packages)))
            progress.info(line)
        elif line.lstrip().startswith("Downloading "):
            progress.info(line.strip())  # names the file and its size
        elif line.startswith("Installing collected packages"):
            progress.update(85)
            progress.info("Unpacking the packages (a minute or more for PyTorch, no progress shown)...")
        elif line.startswith("Successfully installed"):
            progress.update(100)

    code, output = run_logged(cmd, log, progress, env=pip_env(workdir, request), on_line=on_line)
    if code != 0:
        raise LandformError(explain_failure(output, request, python, root=workdir.parent))


def _move_into_place(target: Path, final: Path) -> None:
    """Swap the verified folder in with two renames on the same disk.

    An older install moves aside to ``.previous-*``; it is deleted now unless
    this process has imported torch from it (its files are still in use), else
    when the plugin next loads.
    """
    if final.exists():
        previous = Path(tempfile.mkdtemp(prefix=".previous-", dir=final.parent))
        final.rename(previous / final.name)
        loaded = str(getattr(sys.modules.get("torch"), "__file__", "") or "")
        if not loaded.startswith(str(final)):
            shutil.rmtree(previous, ignore_errors=True)
    target.rename(final)


@dataclass
class Result:
    folder: Optional[Path]
    packages: List[Package]
    verified: dict
    log: Path
    seconds: float


def install(profile_dir, request: Request, progress: Optional[Progress] = None, log_path=None,
            python: Optional[str] = None, dry_run: bool = False) -> Result:
    """Install (or, with ``dry_run``, only list) the pinned packages for QGIS's Python; see the module doc."""
    progress = progress or Progress()
    start = time.monotonic()
    if sys.version_info[:2] < deps.MIN_PYTHON:
        raise LandformError(f"PyTorch {deps.PINS['torch']} needs Python {'.'.join(map(str, deps.MIN_PYTHON))} "
                            f"or newer; this QGIS runs Python {deps.python_tag()}. Use a newer QGIS.")
    root = deps.deps_root(profile_dir)
    root.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else root / LOG_NAME
    if request.wheels and "://" not in request.wheels and not Path(request.wheels).is_dir():
        raise LandformError(f"The wheel folder {request.wheels} does not exist.")
    workdir = Path(tempfile.mkdtemp(prefix=".install-", dir=root))
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            python = python or deps.find_python()
            log.write(f"{datetime.now(timezone.utc).isoformat()} {'dry run' if dry_run else 'install'}: "
                      f"{request.describe()}\nPython: {python} ({deps.python_tag()})\n")
            progress.info(f"Python that QGIS uses: {python}")
            packages = resolve(python, request, workdir, log, progress.sub(0, 15))
            log.write("To install: " + (", ".join(p.pin() for p in packages) or "nothing") + "\n")
            if dry_run or not packages:
                return Result(None, packages, {}, log_path, time.monotonic() - start)
            _check_disk(root, packages)
            target = workdir / "target"
            _pip_target(python, request, packages, target, workdir, log, progress.sub(15, 85))
            progress.info("Checking that PyTorch imports from the new folder...")
            verified = verify(python, target)
            log.write(f"Verification: {json.dumps(verified)}\n")
            if "error" in verified or not verified.get("ok"):
                raise LandformError(f"PyTorch was installed but does not import: {verified.get('error', verified)}. "
                                    f"Nothing was kept; the log {log_path} has the details.")
            marker = {"python": deps.python_tag(), "pins": deps.PINS, "variant": request.variant,
                      "packages": [p.pin() for p in packages], "verified": verified,
                      "installed": datetime.now(timezone.utc).isoformat()}
            (target / deps.MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
            final = deps.deps_dir(profile_dir)
            _move_into_place(target, final)
            verified["torch_file"] = str(verified.get("torch_file", "")).replace(str(target), str(final))
            progress.update(100)
            log.write(f"Installed into {final} in {time.monotonic() - start:.0f} s\n")
            return Result(final, packages, verified, log_path, time.monotonic() - start)
        except (LandformError, Cancelled) as exc:
            log.write(f"Stopped: {exc}\n")
            raise
        except OSError as exc:  # disk full or a permission problem while writing the folder
            log.write(f"Stopped: {exc}\n")
            raise LandformError(f"Could not write the dependency folder in {root}: {exc}. Nothing was kept. If "
                                f"PyTorch is in use in this QGIS session, restart QGIS and run the installer "
                                f"before any deep-learning algorithm.") from exc
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def check(profile_dir, python: Optional[str] = None) -> dict:
    """What is installed where, as QGIS would import it: for a user reporting a problem."""
    folder = deps.deps_dir(profile_dir)
    marker = deps.read_marker(folder)
    report = {"folder": str(folder), "installed": marker, "notices": deps.activate(profile_dir, path=[]).notices}
    try:
        report["python"] = python or deps.find_python()
    except LandformError as exc:
        report["python"], report["python_error"] = None, str(exc)
    active = str(folder) in sys.path
    report["on_sys_path"] = active
    loaded = sys.modules.get("torch")
    report["torch_loaded_from"] = getattr(loaded, "__file__", None)
    others = deps.torch_elsewhere(sys.path, ours=folder)
    report["conflicts"] = [f"another torch {v} in {p}" + (" (shadowed by the plugin's folder)" if marker else "")
                           for p, v in others]
    if loaded is not None and marker and not str(getattr(loaded, "__file__", "")).startswith(str(folder)):
        report["conflicts"].append(f"this QGIS session already imported torch from {loaded.__file__}; "
                                   f"restart QGIS to use the plugin's folder")
    report["torch"] = verify(report["python"], folder if marker else None) if report["python"] else {}
    gpu = deps.detect_gpu()
    report["gpu"] = gpu.describe() if gpu else None
    return report


def format_check(report: dict) -> str:
    """The check as lines of text for the log and the algorithm's report."""
    t = report.get("torch") or {}
    marker = report.get("installed")
    lines = [
        f"Python that QGIS uses: {report.get('python') or report.get('python_error')} (Python {deps.python_tag()})",
        f"Plugin's dependency folder: {report['folder']} "
        + (f"(installed {marker.get('installed', '?')[:19]}, {marker.get('variant')} variant)" if marker
           else "(not installed)"),
        f"On this session's Python path: {'yes' if report.get('on_sys_path') else 'no'}",
        ("PyTorch: " + (f"{t['torch']} from {t.get('torch_file')}, torchvision {t.get('torchvision')}, "
                        f"safetensors {t.get('safetensors')}, device {t.get('device')}"
                        if "torch" in t else f"not importable ({t.get('error', 'not checked')})")),
        f"NVIDIA GPU: {report.get('gpu') or 'none detected (nvidia-smi absent or no driver)'}",
    ]
    if report.get("torch_loaded_from"):
        lines.append(f"Already imported in this session from: {report['torch_loaded_from']}")
    lines += [f"Conflict: {c}" for c in report.get("conflicts", [])]
    lines += [f"Notice: {n}" for n in report.get("notices", [])]
    return "\n".join(lines)
