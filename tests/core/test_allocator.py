"""The heap settings of a classifying process (core.allocator), measured on this process's own
page faults and resident memory with torch tensors (what the forward pass allocates; numpy asks
for huge pages, torch does not): glibc is the C library of every machine this project tests on."""
import resource

import torch  # installed by make setup; a missing torch must fail, not skip

from landform_plugin.core import allocator
from landform_plugin.core.nets.registry import build_model

MB = 1 << 20


def _faults_of_a_forward_pass(model, x) -> int:
    """Minor page faults taken by one forward pass (this process, all threads)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        y = model(x)
    y = None  # noqa: F841 (freed here)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_glibc_is_found():
    assert allocator._glibc() is not None


def test_a_forward_pass_reuses_the_heap_only_while_asked_to():
    """FCN-ResNet (resnet_tiny) on a 1024^2 tile: every pass page-faults in its tensors afresh by
    default (measured: about 75 000 faults); with reuse, the passes after the first take almost none."""
    allocator.settle_allocator()  # as in a classification: 1 MiB and more mapped fresh
    torch.manual_seed(0)
    model = build_model("fcn_resnet", "resnet_tiny", 1).eval()
    x = torch.randn(1, 1, 1024, 1024)
    outside = [_faults_of_a_forward_pass(model, x) for _ in range(2)]
    assert min(outside) > 256 * 256 * 16 * 4 // resource.getpagesize()  # at least one stem-sized tensor
    with allocator.heap_reused_during():
        inside = [_faults_of_a_forward_pass(model, x) for _ in range(4)]
    assert min(inside[1:]) < 0.02 * min(outside) and sum(inside[1:]) < 0.3 * min(outside)
    allocator.release_heap()  # the end of the run
    after = [_faults_of_a_forward_pass(model, x) for _ in range(3)]
    assert max(after) > 0.8 * min(outside)  # fresh pages again (a pass may still find some kept)


def test_the_heap_goes_back_to_the_os_after_the_run():
    allocator.settle_allocator()
    allocator.release_heap()
    base = _rss()
    with allocator.heap_reused_during():
        arrays = [torch.ones(100 * MB // 8, dtype=torch.float64) for _ in range(4)]  # 400 MB resident
        assert _rss() > base + 350 * MB
        arrays = None  # noqa: F841
    kept = _rss() - base
    assert kept <= allocator.HEAP_KEPT_BETWEEN_PASSES + 32 * MB  # between two passes: at most what is kept
    allocator.release_heap()
    assert _rss() - base < 32 * MB  # after the run: nothing
