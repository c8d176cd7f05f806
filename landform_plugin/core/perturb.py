"""Changes to a DEM that should not change its landforms: measurement noise, radar-like
correlated error, voids, and the raster being cut somewhere else.

One module for both sides of robustness: the chip export (core.chips, ``robust_copies``)
trains on these perturbations with the labels of the clean DEM, and bench/robustness.py
measures how many cells change class under them. Training and measurement draw from the
same definitions, so a figure in the model card means what the training recipe says.

Every function takes elevations as float32 with NaN for NoData and a numpy Generator; NaN
cells stay NaN.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

# The training recipe of core.chips' robust copies (each copy draws every part independently).
NOISE_MAX_M = 12.0  # white noise: sigma uniform in [0, NOISE_MAX_M] m (SRTM ~3-6 m, steep terrain ~10 m)
CORRELATED_P = 0.5  # probability of a smooth error field on top
CORRELATED_MAX_M = 12.0  # its standard deviation: uniform in [1, CORRELATED_MAX_M] m
CORRELATION_M = (300.0, 3000.0)  # its correlation length: log-uniform in this range (radar DEM error ~1 km)
VOIDS_P = 0.3  # probability of voids
VOIDS_SHARE = (0.01, 0.06)  # share of the cells made NoData
VOID_DIAMETER_M = (500.0, 2000.0)
CUT_P = 0.6  # probability that the copy is a crop of the DEM (inputs computed on the crop alone)
CUT_SIDE_P = 0.5  # each side is cut with this probability (at least one side when cutting)
CUT_MIN_KEEP = 0.35  # the crop keeps at least this share of each axis


def gaussian_noise(z: np.ndarray, sigma_m: float, rng: np.random.Generator) -> np.ndarray:
    """``z`` plus independent normal noise of standard deviation ``sigma_m`` metres per cell."""
    if sigma_m <= 0:
        return z.copy()
    return (z + rng.normal(0.0, sigma_m, z.shape).astype(np.float32)).astype(np.float32)


def smooth_field(shape: Tuple[int, int], amplitude_m: float, correlation_m: float, pixel_size_m: float,
                 rng: np.random.Generator) -> np.ndarray:
    """A random field of standard deviation ``amplitude_m`` whose correlation falls to 1/e at
    ``correlation_m``: white noise smoothed by a Gaussian of sigma = correlation / 2 (the
    autocorrelation of Gaussian-filtered white noise is exp(-r^2 / (4 sigma^2)))."""
    from scipy.ndimage import gaussian_filter

    sigma_px = max(0.5, correlation_m / 2.0 / pixel_size_m)
    f = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px, mode="wrap")
    sd = float(f.std())
    return (f * np.float32(amplitude_m / sd if sd > 0 else 0.0)).astype(np.float32)


def correlated_noise(z: np.ndarray, amplitude_m: float, correlation_m: float, pixel_size_m: float,
                     rng: np.random.Generator) -> np.ndarray:
    """``z`` plus a smooth error field (``smooth_field``), like the error of a radar DEM."""
    return (z + smooth_field(z.shape, amplitude_m, correlation_m, pixel_size_m, rng)).astype(np.float32)


def void_mask(shape: Tuple[int, int], share: float, diameter_m: Tuple[float, float], pixel_size_m: float,
              rng: np.random.Generator) -> np.ndarray:
    """Round blobs of diameters uniform in ``diameter_m`` covering about ``share`` of the cells."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    target = share * h * w
    yy, xx = np.ogrid[:h, :w]
    for _ in range(10_000):
        if mask.sum() >= target:
            break
        r = rng.uniform(*diameter_m) / 2.0 / pixel_size_m
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        y0, y1 = max(0, int(cy - r - 1)), min(h, int(cy + r + 2))
        x0, x1 = max(0, int(cx - r - 1)), min(w, int(cx + r + 2))
        mask[y0:y1, x0:x1] |= (yy[y0:y1] - cy) ** 2 + (xx[:, x0:x1] - cx) ** 2 <= r * r
    return mask


def with_voids(z: np.ndarray, share: float, diameter_m: Tuple[float, float], pixel_size_m: float,
               rng: np.random.Generator) -> np.ndarray:
    out = z.copy()
    out[void_mask(z.shape, share, diameter_m, pixel_size_m, rng)] = np.nan
    return out


@dataclass
class TrainingCopy:
    """A perturbed copy of a DEM for training: elevations (NaN = NoData) and the part of the
    raster the copy keeps (``box`` = x0, y0, x1, y1; the whole raster when it is not cut)."""

    z: np.ndarray
    box: Tuple[int, int, int, int]
    description: str


def random_cut(width: int, height: int, min_size: int, rng: np.random.Generator) -> Optional[Tuple[int, int, int, int]]:
    """A random crop box that cuts at least one side, keeping at least ``min_size`` cells and
    ``CUT_MIN_KEEP`` of each axis; None when the raster is too small to cut."""
    def axis(n, cut_lo, cut_hi):
        keep_min = max(min_size, int(np.ceil(CUT_MIN_KEEP * n)))
        if n - keep_min < 2:
            return 0, n
        spare = n - keep_min
        lo = int(rng.integers(1, spare + 1)) if cut_lo else 0
        hi = n - (int(rng.integers(1, spare - lo + 1)) if cut_hi and spare - lo >= 1 else 0)
        return lo, hi

    sides = rng.random(4) < CUT_SIDE_P
    if not sides.any():
        sides[int(rng.integers(0, 4))] = True
    x0, x1 = axis(width, sides[0], sides[1])
    y0, y1 = axis(height, sides[2], sides[3])
    if (x0, y0, x1, y1) == (0, 0, width, height):
        return None
    return x0, y0, x1, y1


def training_copy(z: np.ndarray, pixel_size_m: float, min_size: int, rng: np.random.Generator) -> TrainingCopy:
    """One perturbed copy of ``z`` by the recipe above (noise always; a smooth error field,
    voids and a cut each at random)."""
    parts = []
    sigma = float(rng.uniform(0.0, NOISE_MAX_M))
    out = gaussian_noise(z, sigma, rng)
    parts.append(f"noise {sigma:.1f} m")
    if rng.random() < CORRELATED_P:
        amp = float(rng.uniform(1.0, CORRELATED_MAX_M))
        corr = float(np.exp(rng.uniform(np.log(CORRELATION_M[0]), np.log(CORRELATION_M[1]))))
        out = correlated_noise(out, amp, corr, pixel_size_m, rng)
        parts.append(f"smooth error {amp:.1f} m / {corr:.0f} m")
    if rng.random() < VOIDS_P:
        share = float(rng.uniform(*VOIDS_SHARE))
        out = with_voids(out, share, VOID_DIAMETER_M, pixel_size_m, rng)
        parts.append(f"voids {100 * share:.1f} %")
    h, w = z.shape
    box = (0, 0, w, h)
    if rng.random() < CUT_P:
        cut = random_cut(w, h, min_size, rng)
        if cut is not None:
            box = cut
            parts.append(f"cut to x {cut[0]}-{cut[2]}, y {cut[1]}-{cut[3]}")
    return TrainingCopy(out.astype(np.float32, copy=False), box, "; ".join(parts))
