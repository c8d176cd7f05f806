"""The C heap (glibc's malloc) of a process that classifies: peak memory against speed.

Everything here is glibc's ``mallopt`` and ``malloc_trim``; with another C library (macOS,
Windows, musl) every function does nothing.

- ``settle_allocator`` (every process that runs blocks, the default): arrays of 1 MiB and more
  come straight from the OS and go back to it when freed, so the reader's, the writer's and
  torch's threads do not each keep a fragmented heap at its peak.
- ``tune_worker`` (Dask workers): the nanny makes every freed heap array go back to the OS; a
  worker keeps up to WORKER_TRIM_THRESHOLD instead.
- ``heap_reused_during`` (the "reuse memory" option, around each CPU forward pass): the network's
  layers allocate and free dozens of tile-sized tensors (20-300 MB) per pass. Mapped fresh from
  the OS, each one page-faults in zeroed pages, which on the 2-core VM this was measured on was
  a third of the pass; from the heap, each reuses what a layer before freed. It costs memory:
  the other threads' arrays made during the pass come from the heap too and fragment it.
  Measured on an 8192^2 DEM, FCN-ResNet18, one process (bench/classify.py, two runs): wall
  50.5-51.5 s and peak RSS 1.25-1.27 GB by default, 36.1-43.4 s and 1.80-1.81 GB with the option
  (1.16-1.43x faster); the bare forward pass over the same cells 1.42x faster.
"""
import contextlib
import ctypes
import sys
import threading

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -3, -4, -8
GLIBC_MMAP_MAX = 65536  # glibc's default number of mmap'ed chunks (DEFAULT_MMAP_MAX)
GLIBC_TRIM_THRESHOLD = 128 * 1024  # glibc's default M_TRIM_THRESHOLD (DEFAULT_TRIM_THRESHOLD)

MMAP_THRESHOLD = 1 << 20  # arrays from this size on are mapped from and returned to the OS directly
ARENA_MAX = 2  # glibc heaps shared by a block process's threads (see settle_allocator)
# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, so every freed heap array goes back
# to the OS and the next one page-faults in again; measured on a 4096^2 DEM, 2 workers of 1 thread:
# total CPU seconds 261 -> 242 with 256 MiB (one process: 230).
WORKER_TRIM_THRESHOLD = 256 << 20  # bytes of freed heap a worker keeps before returning it to the OS
# During a forward pass with reuse: freed memory at the heap's top is kept (mallopt takes an int);
# between passes at most HEAP_KEPT_BETWEEN_PASSES stays for the next one. Tried on the same DEM and
# model (one run each, default settings 48.7 s and 1.26 GB in the same hour): keeping 512 MiB and
# never trimming, 35.5 s and 2.27 GB; trimming everything after each pass, 43.3 s and 1.88 GB;
# the kept 256 MiB, 39.4 s and 1.81 GB; a 32 MiB mmap threshold during the pass instead of no mmap
# at all, no gain and 1.58-1.61 GB.
FORWARD_TRIM_THRESHOLD = 1 << 30
HEAP_KEPT_BETWEEN_PASSES = 256 << 20

_libc = None
_done = set()
_trim_threshold = GLIBC_TRIM_THRESHOLD  # M_TRIM_THRESHOLD outside a forward pass with reuse
_lock = threading.Lock()


def _glibc():
    """glibc, or None where the C library is another one."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL("libc.so.6")
            _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc or None


def _mallopt_once(param: int, value: int) -> None:
    """``mallopt(param, value)`` the first time only in this process."""
    if param in _done:
        return
    _done.add(param)
    lib = _glibc()
    if lib is not None:
        lib.mallopt(param, value)


def settle_allocator() -> None:
    """Arrays of 1 MiB and more straight from and back to the OS, in every process that runs blocks.

    glibc raises its mmap threshold to the size of each large array freed (up to 32 MiB), after
    which a block's tile inputs, probabilities and pieces (4-100 MB, made in three threads) come
    from per-thread heaps that fragment and keep their peak. Measured on a 4096^2 DEM (one process,
    2048 tiles): peak RSS 2.17 -> 1.85 GB.

    Outside QGIS, the smaller allocations of the reader, the writer and torch's threads also share
    ARENA_MAX heaps instead of one each (set before torch starts its threads): 8192^2, FCN-ResNet18,
    one process, peak RSS 1.45-1.54 -> 1.37-1.46 GB (three runs each). Inside QGIS the desktop's
    own threads keep their heaps (its rendering allocates from many).
    """
    _mallopt_once(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    if "qgis.core" not in sys.modules:
        _mallopt_once(M_ARENA_MAX, ARENA_MAX)


def tune_worker() -> None:
    """A Dask worker keeps WORKER_TRIM_THRESHOLD of freed heap (its nanny set 64 KiB)."""
    global _trim_threshold
    _trim_threshold = WORKER_TRIM_THRESHOLD  # what heap_reused_during and release_heap restore
    _mallopt_once(M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD)


@contextlib.contextmanager
def heap_reused_during():
    """Within the block, large allocations come from the heap and freed ones stay there for the
    next; on leaving, mmap is allowed again and all but HEAP_KEPT_BETWEEN_PASSES of the freed
    heap goes back to the OS (``release_heap`` returns the rest).

    A process-wide setting while it lasts: other threads' large arrays made meanwhile come from
    the heap too. The CPU forward pass of FCN-ResNet18 on a 2304^2 tile, alone in a process:
    2.7-3.2 s with every tensor mapped fresh, 1.6-1.7 s reusing the heap.
    """
    lib = _glibc()
    if lib is None:
        yield
        return
    with _lock:
        lib.mallopt(M_TRIM_THRESHOLD, FORWARD_TRIM_THRESHOLD)
        lib.mallopt(M_MMAP_MAX, 0)
    try:
        yield
    finally:
        with _lock:
            lib.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
            lib.mallopt(M_TRIM_THRESHOLD, max(_trim_threshold, HEAP_KEPT_BETWEEN_PASSES))
            lib.malloc_trim(ctypes.c_size_t(HEAP_KEPT_BETWEEN_PASSES))


def release_heap() -> None:
    """After a run with reuse: the process's own trim threshold again, and the freed heap back to the OS."""
    lib = _glibc()
    if lib is not None:
        with _lock:
            lib.mallopt(M_TRIM_THRESHOLD, _trim_threshold)
            lib.malloc_trim(ctypes.c_size_t(0))
