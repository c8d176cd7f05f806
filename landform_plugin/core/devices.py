"""Where torch runs and in which precision: one answer for training and classification."""
import contextlib

from .errors import LandformError, import_torch

CHOICES = ("auto", "cpu", "cuda")  # what the Processing algorithms offer; the command line also takes cuda:N


def resolve_device(device: str = "auto"):
    """'auto' (CUDA when PyTorch sees a GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N'."""
    torch = import_torch()
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LandformError(f"Device '{device}' was requested but PyTorch sees no CUDA GPU here; choose 'auto' or 'cpu'.")
        return torch.device(name)
    raise LandformError(f"Unknown device '{device}'; choose auto, cpu or cuda.")


def autocast_dtype(device, amp: str = "auto", cpu: bool = True):
    """The autocast dtype for ``device``, or None for float32.

    CUDA: bfloat16 where the GPU supports it, else float16. CPU (``cpu`` True, as in
    training): bfloat16 only when asked (``amp`` 'on') or on CPUs with AVX512-BF16 or
    AMX, since on an AVX2-only CPU it was measured 8x slower than float32.
    Classification passes ``cpu=False``: it autocasts on CUDA only.
    """
    torch = import_torch()
    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if cpu and device.type == "cpu" and (amp == "on" or cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX in /proc/cpuinfo (False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device, dtype):
    """torch.autocast for ``dtype`` on ``device``; a no-op context for float32 (dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return import_torch().autocast(device_type=device.type, dtype=dtype)
