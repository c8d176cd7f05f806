"""Labelling strategies at class boundaries (Yang et al. 2023, section 4, Table 4, Fig. 12).

Map labels drawn at 1:1,000,000 are a few pixels off at class boundaries on a
30 m DEM. The paper compared three ways of using them:

``original``  the labels as they are;
``ignore``    pixels in a buffer around class boundaries are left out of the
              loss (set to ``IGNORE_INDEX``, 255);
``random``    pixels in that buffer get a random label (seeded), "blurring
              the boundary".

Buffer definition (the paper says "a 5-pixel width buffer on boundaries"
without more detail): a labelled pixel is in the buffer of width N when a pixel
of ANOTHER class lies within Euclidean distance N pixels of it (disk footprint,
x^2 + y^2 <= N^2). Along a straight boundary this takes N pixels on each side.
Pixels already at ``IGNORE_INDEX`` (unlabelled) neither create boundaries nor
change. The raster edge is not a boundary. Class 0 (no data) is a class like
the others, as in the paper's labels.

``random`` draws, for each buffer pixel, uniformly among the classes present
within N pixels of it (its own class included), so random labels stay among the
classes that actually meet there.

Apply a strategy to the whole label raster before cutting chips, so chip edges
do not create or hide boundaries.
"""
from typing import List, Optional

import numpy as np

from .errors import LandformError

IGNORE_INDEX = 255
STRATEGIES = ["original", "ignore", "random"]
DEFAULT_BUFFER_PX = 5


def disk(radius: int) -> np.ndarray:
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r


def _class_reach(labels: np.ndarray, buffer_px: int, ignore_index: int):
    """Classes present and, for each, a bool map of pixels within ``buffer_px`` of it."""
    from scipy import ndimage  # imported here: the strategy names are needed where scipy may be missing

    fp = disk(buffer_px)
    classes: List[int] = [int(c) for c in np.unique(labels) if int(c) != ignore_index]
    reach = np.zeros((len(classes),) + labels.shape, dtype=bool)
    for k, c in enumerate(classes):
        ndimage.binary_dilation(labels == c, structure=fp, output=reach[k])
    return classes, reach


def boundary_buffer(labels: np.ndarray, buffer_px: int = DEFAULT_BUFFER_PX, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Bool mask of labelled pixels with a pixel of another class within ``buffer_px``."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError("labels must be a 2-D array")
    if buffer_px <= 0:
        return np.zeros(labels.shape, dtype=bool)
    classes, reach = _class_reach(labels, buffer_px, ignore_index)
    nearby = reach.sum(axis=0)  # number of classes within reach (own class included)
    return (nearby >= 2) & (labels != ignore_index)


def apply_strategy(
    labels: np.ndarray,
    strategy: str = "original",
    buffer_px: int = DEFAULT_BUFFER_PX,
    seed: Optional[int] = 0,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Return a new uint8 label array with ``strategy`` applied (input unchanged)."""
    if strategy not in STRATEGIES:
        raise LandformError(f"Unknown labelling strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}.")
    labels = np.asarray(labels)
    out = labels.astype(np.uint8, copy=True)
    if strategy == "original" or buffer_px <= 0:
        return out
    if buffer_px > 1000:
        raise LandformError(f"A boundary buffer of {buffer_px} pixels is unreasonably wide.")
    classes, reach = _class_reach(labels, buffer_px, ignore_index)
    nearby = reach.sum(axis=0)
    buf = (nearby >= 2) & (labels != ignore_index)
    if strategy == "ignore":
        out[buf] = ignore_index
        return out
    # random: pick uniformly among the classes within reach of each buffer pixel
    rng = np.random.default_rng(seed)
    n_buf = int(buf.sum())
    if n_buf == 0:
        return out
    cand = reach[:, buf]  # (C, n_buf)
    counts = cand.sum(axis=0)
    pick = np.floor(rng.random(n_buf) * counts).astype(np.int64)  # 0..count-1
    order = np.cumsum(cand, axis=0) - 1  # index of each candidate among the true ones
    chosen = np.argmax(cand & (order == pick[None, :]), axis=0)
    out[buf] = np.asarray(classes, dtype=np.uint8)[chosen]
    return out
