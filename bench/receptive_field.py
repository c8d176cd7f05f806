"""How far a tile's border reaches into its prediction: the curve that sets the context margin.

    .venv/bin/python bench/receptive_field.py [--dem DEM ...] [--window 512] [--threads 2]

For each DEM (default: the bundled Boulder sample) and each network (the bundled default model,
and a random-weight FCN-ResNet50, the paper's network, with its BatchNorm statistics estimated on
the DEM so its activations have a trained network's scale), the network input of the DEM's whole
processing lattice is built once, exactly as the classifier builds it, and predicted twice:

- whole: in one forward pass over the whole lattice (the reference: no tile borders at all);
- windows: cut into windows of --window cells (at multiples of 32 cells from the lattice origin,
  the network's output stride, so the feature grid lines up with the whole pass), each predicted
  alone with no context beyond it.

Both are smoothed as classification smooths them (``--smoothing``, default: classification's
default sigma; core.smoothing), each window on its own, so the curve is that of the maps.

Every valid DEM cell of a window is binned by its distance to the nearest window border that is
a cut (a border on the lattice's own edge is not a cut: the whole pass has the same edge). Per
bin: the mean and the 99.9th percentile of the largest per-class probability difference, and
the share of cells whose class (argmax over the landform classes) differs from the whole pass.

In the classifier a tile keeps only its centre and sees ``margin`` more cells of context on each
side, so a kept cell is at least ``margin`` cells from any cut: the margin must be where this
curve has reached the level of the whole pass's own numerical noise.
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from landform_plugin.core.errors import import_torch  # noqa: E402

SAMPLE = os.path.join(REPO, "resources", "sample", "boulder_frontrange_srtmgl3.tif")
DEFAULT_MODEL = os.path.join(REPO, "models", "default_model.safetensors")
STRIDE = 32
BINS = [0, 8, 16, 32, 48, 64, 96, 128, 160, 192, 256, 384]


def lattice_input(dem: str, spec: dict):
    """(channels (C, H, W), valid (H, W)) of the DEM's whole processing lattice, H and W multiples of 32."""
    from landform_plugin.core import inputs
    from landform_plugin.core.grid import LatticeReader, main_zone, processing_zones
    from landform_plugin.core.rasters import open_raster

    _, info = open_raster(dem)
    px = float(spec["pixel_size_m"])
    zone = main_zone(processing_zones(info, px), info)
    factors, norm = list(spec["input_factors"]), spec["normalisation"]
    halo = inputs.halo_pixels(factors, norm, px)
    c0, r0, c1, r1 = zone.domain
    w, h = (c1 - c0) // STRIDE * STRIDE, (r1 - r0) // STRIDE * STRIDE
    reader = LatticeReader(dem, 1, info, zone, px)
    elev = reader.read((c0 - halo, r0 - halo, c0 + w + halo, r0 + h + halo), clip=False)
    reader.close()
    chans, valid = inputs.make_input(elev, halo, factors, norm, px)
    return chans, valid


def random_resnet50(spec: dict, chans: np.ndarray):
    """A random-weight FCN-ResNet50 with BatchNorm statistics estimated on ``chans`` (then eval mode)."""
    torch = import_torch()
    from landform_plugin.core.nets.registry import build_model

    torch.manual_seed(0)
    model = build_model("fcn_resnet", "resnet50", chans.shape[0], len(spec["classes"]))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative mean over the estimation batches
    model.train()
    rng = np.random.default_rng(0)
    _, h, w = chans.shape
    with torch.no_grad():
        for _ in range(8):
            y = int(rng.integers(0, (h - 256) // STRIDE + 1)) * STRIDE
            x = int(rng.integers(0, (w - 256) // STRIDE + 1)) * STRIDE
            model(torch.from_numpy(np.ascontiguousarray(chans[None, :, y : y + 256, x : x + 256])))
    return model.eval()


def probabilities(model, x: np.ndarray) -> np.ndarray:
    torch = import_torch()
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x[None]))), dim=1)[0].numpy()


def border_curve(model, chans: np.ndarray, valid: np.ndarray, window: int, smoothing: float = 0.0):
    """Per distance bin: (cells, mean max |dp|, p99.9 max |dp|, class changes %)."""
    from landform_plugin.core.smoothing import smooth_probabilities

    whole = smooth_probabilities(probabilities(model, chans), smoothing, (0, 0))
    _, h, w = chans.shape
    dists, diffs, changed = [], [], []
    step = window // 2
    for y in range(0, max(1, h - window + 1), step):
        for x in range(0, max(1, w - window + 1), step):
            hh, ww = min(window, h - y), min(window, w - x)
            p = smooth_probabilities(probabilities(model, chans[:, y : y + hh, x : x + ww]), smoothing, (x, y))
            ref = whole[:, y : y + hh, x : x + ww]
            big = np.float32(1e9)  # a border on the lattice's own edge is not a cut
            iy, ix = np.arange(hh, dtype=np.float32), np.arange(ww, dtype=np.float32)
            top = iy if y > 0 else np.full(hh, big)
            bottom = (hh - 1 - iy) if y + hh < h else np.full(hh, big)
            left = ix if x > 0 else np.full(ww, big)
            right = (ww - 1 - ix) if x + ww < w else np.full(ww, big)
            d = np.minimum(np.minimum(top, bottom)[:, None], np.minimum(left, right)[None, :])
            ok = valid[y : y + hh, x : x + ww]
            dists.append(d[ok])
            diffs.append(np.abs(p - ref).max(axis=0)[ok])
            changed.append((p[1:].argmax(0) != ref[1:].argmax(0))[ok])
    d, dp, ch = np.concatenate(dists), np.concatenate(diffs), np.concatenate(changed)
    rows = []
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        sel = (d >= lo) & (d < hi)
        if sel.sum() == 0:
            continue
        rows.append((lo, hi, int(sel.sum()), float(dp[sel].mean()), float(np.quantile(dp[sel], 0.999)),
                     100.0 * float(ch[sel].mean())))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dem", nargs="*", default=[SAMPLE], help="DEMs (real, not seen in training)")
    ap.add_argument("--window", type=int, default=512, help="window size in cells (a multiple of 32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoothing", type=float, default=None,
                    help="sigma (cells) of the probabilities' smoothing (default: classification's default)")
    args = ap.parse_args(argv)
    from landform_plugin.core.predict import DEFAULT_SMOOTHING

    smoothing = DEFAULT_SMOOTHING if args.smoothing is None else args.smoothing
    torch = import_torch()
    torch.set_num_threads(args.threads)
    from landform_plugin.core.modelfile import load_model

    default, spec = load_model(DEFAULT_MODEL)
    for dem in args.dem:
        t0 = time.perf_counter()
        chans, valid = lattice_input(dem, spec)
        nets = [("default model (FCN-ResNet18)", default), ("FCN-ResNet50, random weights", random_resnet50(spec, chans))]
        for name, model in nets:
            rows = border_curve(model, chans, valid, args.window, smoothing)
            print(f"\n{os.path.basename(dem)}: {chans.shape[2]} x {chans.shape[1]} cells at {spec['pixel_size_m']:g} m, "
                  f"{name}, windows of {args.window}, smoothing {smoothing:g}")
            print("distance to cut | cells   | mean max|dp| | p99.9 max|dp| | class changes %")
            for lo, hi, n, mean, q, ch in rows:
                print(f"{lo:>6}-{hi:<8} | {n:>7} | {mean:12.2e} | {q:13.2e} | {ch:8.4f}")
        print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
