"""Spatial smoothing of the class probabilities (the SMOOTHING option of classification).

Why: a CNN's map moves a little with where the terrain falls on its strided grid. Shifting the DEM
by one cell changes 1.8 % of the cells' classes (the bundled model, six held-out DEMs,
bench/robustness.py), mostly as speckle and ragged class boundaries a few cells wide; the
probabilities carry that high-frequency part, the landforms (features of a kilometre and more at
90 m) do not. A Gaussian low-pass of the landform probabilities before the argmax removes most of
it: on the same bench, sigma 5 cells brings the shift's change to 0.82 % and flips and rotation
from 3.7 to 2.1 %, for 0.7 points of PA and 1.7 of MIoU less agreement with the rules (the
README's table has every figure).

How, cheaply: a full-resolution Gaussian of sigma 5 over a 2304^2 tile costs about 1 s on two CPU
cores, half the tile's forward pass. The probabilities are instead averaged over f x f blocks (f = 4 for
sigma >= 4), smoothed there with a Gaussian whose variance is the rest of sigma^2 (block averaging
plus bilinear interpolation back add about f^2 / 4 cells^2), and interpolated back bilinearly:
about 0.1 s. The blocks are aligned on the global lattice (multiples of f from its origin), not on
the tile, so a cell's smoothed value is the same in every tiling and crop whose tiles give it the
same probabilities. A value depends on cells up to ``reach_cells`` away (24 at sigma 5): the
prediction smooths each tile together with that much of its context margin.
"""
import math
from typing import Tuple

import numpy as np

from .errors import import_torch

TRUNCATE = 3.0  # the Gaussian kernel's half-width, in sigmas


def pool_factor(sigma: float) -> int:
    """Block size of the averaging before the Gaussian: coarse enough to be cheap, fine enough to
    leave most of sigma to the Gaussian itself."""
    return 4 if sigma >= 4 else 2 if sigma >= 2 else 1


def block_sigma(sigma: float) -> float:
    """The Gaussian's sigma in blocks: what is left of ``sigma`` after block averaging and bilinear
    interpolation, which add about f^2 / 4 cells^2 of variance."""
    f = pool_factor(sigma)
    return math.sqrt(max(sigma * sigma - f * f / 4.0, (0.5 * f) ** 2)) / f


def reach_cells(sigma: float) -> int:
    """How far (cells) a probability can move another cell's smoothed value: the Gaussian's
    half-width, plus a block for the interpolation and one for the block's own extent."""
    if sigma <= 0:
        return 0
    f = pool_factor(sigma)
    return f * (kernel_radius(block_sigma(sigma)) + 2)


def kernel_radius(sigma: float) -> int:
    return max(1, int(math.ceil(TRUNCATE * sigma)))


def gaussian_kernel(sigma: float):
    torch = import_torch()
    r = kernel_radius(sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    return k / k.sum()


def smooth_probabilities(probs: np.ndarray, sigma: float, origin: Tuple[int, int], first_band: int = 1) -> np.ndarray:
    """``probs`` (C, H, W) of a window whose top-left cell is global lattice cell ``origin`` = (x, y),
    with bands ``first_band:`` (the landform classes; "no data" is set aside by ``finalise``)
    low-passed by a Gaussian of ``sigma`` cells, in place. Returns ``probs``."""
    if sigma <= 0:
        return probs
    torch = import_torch()
    fn = torch.nn.functional
    f = pool_factor(sigma)
    _, h, w = probs.shape
    # pad so that the blocks start on global multiples of f and the window is whole blocks
    fx, fy = int(origin[0]) % f, int(origin[1]) % f
    px, py = -(fx + w) % f, -(fy + h) % f
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(probs[first_band:]))[None]
        if fx or fy or px or py:
            t = fn.pad(t, (fx, px, fy, py), mode="replicate")
        if f > 1:
            t = fn.avg_pool2d(t, f)
        k = gaussian_kernel(block_sigma(sigma))
        r, n = k.numel() // 2, t.shape[1]
        t = fn.pad(t, (r, r, r, r), mode="replicate")
        t = fn.conv2d(t, k.view(1, 1, 1, -1).expand(n, 1, 1, 2 * r + 1).contiguous(), groups=n)
        t = fn.conv2d(t, k.view(1, 1, -1, 1).expand(n, 1, 2 * r + 1, 1).contiguous(), groups=n)
        if f > 1:
            t = fn.interpolate(t, scale_factor=f, mode="bilinear", align_corners=False)
        probs[first_band:] = t[0, :, fy : fy + h, fx : fx + w].numpy()
    return probs
