"""Hostile inputs for the batteries in tests/core and tests/processing: broken files made
from the real DEM fixtures, and small or read-only filesystems (tmpfs, needs root)."""
import json
import os
import shutil
import subprocess
from contextlib import contextmanager

import numpy as np
import pytest

# What a user must never see: Python's own words for a failure.
TRACEBACK_WORDS = ("Traceback", "AttributeError", "NoneType", "FileExistsError", "NotADirectoryError",
                   "KeyError", "IndexError", "TypeError", "SafetensorError", "RuntimeError")


def truncated(src, dst):
    """The first half of ``src``: the header reads, the pixel blocks do not."""
    data = open(src, "rb").read()
    open(dst, "wb").write(data[: len(data) // 2])
    return str(dst)


def corrupt_tiff(dst):
    """A TIFF signature followed by noise."""
    rng = np.random.default_rng(0)
    open(dst, "wb").write(b"II*\x00" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    return str(dst)


def zero_bytes(dst):
    open(dst, "wb").close()
    return str(dst)


def corrupt_geojson(dst):
    open(dst, "w").write('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Pol')
    return str(dst)


def a_file(dst):
    """A plain file where an output folder is expected."""
    open(dst, "w").write("not a folder\n")
    return str(dst)


def wrong_shape_model(good, dst):
    """A valid safetensors file with the good model's spec but one weight of another shape."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(good, framework="pt") as fh:
        meta = fh.metadata()
    state = load_file(good)
    key = sorted(k for k in state if k.endswith("weight") and state[k].ndim == 4)[-1]
    shape = list(state[key].shape)
    shape[0] += 3
    import torch

    state[key] = torch.zeros(shape)
    save_file(state, dst, metadata=meta)
    return str(dst)


def mismatched_factors_model(dst, pixel_size_m, tile_size):
    """A model file whose header is valid but whose tensors do not fit it: a one-channel resnet_tiny
    FCN-ResNet's weights under a spec that declares two input factors (dem, slope)."""
    from safetensors.torch import save_file

    from landform_plugin.core.modelfile import make_spec
    from landform_plugin.core.nets.registry import build_model

    m = build_model("fcn_resnet", "resnet_tiny", 1, decoder_channels=32)
    spec = make_spec("fcn_resnet", "resnet_tiny", ["dem"], pixel_size_m, tile_size, arch_options={"decoder_channels": 32})
    bad = dict(spec, input_factors=["dem", "slope"],
               normalisation={"dem": spec["normalisation"]["dem"], "slope": {"method": "affine", "offset": 0, "scale": 45}})
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(dst), metadata={"landform_model": json.dumps(bad)})
    return str(dst)


def assert_clear(message, *needles):
    """A sentence for the user: names what it must, no Python failure words."""
    text = str(message)
    for word in TRACEBACK_WORDS:
        assert word not in text, f"{word!r} in the message: {text}"
    for needle in needles:
        assert needle.lower() in text.lower(), f"{needle!r} not in the message: {text}"


def assert_nothing_complete(folder, *names):
    """None of the named outputs exists, and no temporary file is left in ``folder``."""
    for name in names:
        assert not os.path.exists(os.path.join(folder, name)), f"{name} was left in {folder}"
    if os.path.isdir(folder):
        left = [n for n in os.listdir(folder) if ".partial" in n or n.startswith(".landform_probe_")]
        assert not left, f"temporary files left: {left}"


@contextmanager
def tmpfs(path, size="64k", read_only=False):
    """A small (or read-only) filesystem at ``path``; skips where mounting is not allowed."""
    os.makedirs(path, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'})")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def fill(folder, leave=0):
    """Fill the filesystem of ``folder`` up to ``leave`` free bytes."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(os.path.join(folder, "ballast"), "wb") as fh:
        try:
            fh.write(b"\0" * max(0, free - leave))
        except OSError:
            pass


def manifest_of(chip_dir):
    return json.load(open(os.path.join(chip_dir, "manifest.json")))
