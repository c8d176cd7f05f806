"""Exceptions the core raises; the Processing layer turns them into QgsProcessingException."""
import os
import sys


class LandformError(ValueError):
    """Bad input or state, with a message written for the user (no traceback needed)."""


class Cancelled(Exception):
    """The user cancelled the run; partial outputs have been removed."""


class MissingDependency(ImportError):
    """An optional package (torch, torchvision, richdem) is not installed."""


TORCH_INSTALL_HINT = (
    "This algorithm needs PyTorch and torchvision in the Python that QGIS uses. "
    "Install them with the algorithm 'Install deep-learning dependencies' (Processing Toolbox > "
    "Landform classification > Set-up; or 'qgis_process run landform:installdependencies'), "
    "or by hand with that Python's pip, for example on Linux "
    "'python3 -m pip install --user torch torchvision', on Windows from the OSGeo4W Shell "
    "'python -m pip install torch torchvision', on macOS "
    "'/Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install torch torchvision'; "
    "then restart QGIS. See the plugin's README, section 'Installing the plugin into QGIS'."
)


def prefer_huge_pages() -> None:
    """Ask torch to back its large CPU tensors with transparent huge pages (Linux).

    A network's activations (hundreds of MB per batch) are fresh mmap'd memory
    at every forward pass; with 4 KiB pages the kernel spends a quarter of the
    run in page faults. Measured on a 2-core Debian 12 VM (FCN-ResNet18, batch
    2 x 1088^2, THP in 'madvise' mode): CPU seconds per forward 28.4 -> 21.2 with
    2 threads, 24.0 -> 20.3 with 1 thread; minor faults 2.3 M -> 0.26 M. torch
    reads THP_MEM_ALLOC_ENABLE once, at its first allocation, so this must run
    before torch is imported; a user's own setting wins.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def import_torch():
    """Import torch lazily, with an install hint instead of a bare ImportError.

    Inside a QGIS process, triton is kept out first: ``import torch`` (Linux
    wheels) imports triton, whose bundled LLVM aborts the QGIS desktop when
    Mesa's LLVM is already loaded (llvm::DebugCounter registered twice, exit 134,
    measured with torch 2.14.1 on Debian 12). Triton only serves torch.compile,
    which this plugin never uses; torch runs unchanged without it.
    """
    if "qgis.core" in sys.modules and "torch" not in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # makes `import triton` raise ImportError, which torch handles
    if "torch" not in sys.modules:
        prefer_huge_pages()
    try:
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised in a torch-less env test
        raise MissingDependency(f"{TORCH_INSTALL_HINT} (import failed: {exc})") from exc
    return torch


def import_torchvision():
    """Import torchvision, with the install hint instead of a bare ImportError.

    Only DeepLabv3 (torchvision's dilated ResNet and heads) imports it: torchvision's import
    pulls in torch._dynamo and sympy, 0.17 GB of resident memory that the FCN-ResNet
    (nets/resnet.py) does without.
    """
    import_torch()
    try:
        import torchvision
    except ImportError as exc:
        raise MissingDependency(f"{TORCH_INSTALL_HINT} (import failed: {exc})") from exc
    return torchvision
