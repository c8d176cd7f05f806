"""Overlapping tiles and their blending weights (no torch, no GDAL).

Tiles
-----
A raster of ``width x height`` cells (the *processing grid*) is covered by
tiles of ``tile_w x tile_h`` whose origins are ``k * step`` with ``step`` a
multiple of the network's output stride (32 for ResNets): every tile then
cuts the raster at the same phase of the encoder's downsampling, so the
feature grids of neighbouring tiles line up and their predictions agree in the
overlap. Tiles may reach past the right/bottom edge; the predictor fills that
part by reflecting the input (``numpy.pad(mode="reflect")``), which keeps the
terrain's texture instead of inventing a flat cliff. A raster smaller than a
tile is one tile (rounded up to the stride), i.e. a whole-raster pass.

Blending
--------
Each tile's softmax probabilities are accumulated with weight ``w(x) * w(y)``
and divided by the summed weights. ``w`` is a Hann window,
``sin^2(pi (i + 0.5) / n)``: smooth, high in the middle where the network sees
its full context and near zero at the tile border where zero padding inside
the network degrades predictions. Pielawski & Wahlby (2020) found the Hann
window best among weighting windows for tiled CNN prediction (../shared/GUIDE.md
section 4); unlike cropping it has no discontinuity to create a seam, and
unlike a Gaussian it reaches ~0 at the border. The half-window facing a raster
edge is set to 1 (no neighbour tile can take over there), so edge pixels are
not predicted from a vanishing weight.

Units of work
-------------
``TilePlan.tiles()`` lists independent tiles; ``Blender`` accumulates their
probabilities in row strips and hands back finished rows, so memory holds one
strip of ``tile_h x width`` cells, whatever the raster height. A distributed
engine can map tiles to probabilities on workers and feed ``Blender.add`` in
tile-row order.
"""
import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np

from .errors import LandformError


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple)) * multiple


@dataclass(frozen=True)
class Tile:
    row: int  # tile-row index
    col: int  # tile-column index
    x0: int
    y0: int
    width: int
    height: int


@dataclass(frozen=True)
class TilePlan:
    width: int  # raster size (processing grid)
    height: int
    tile_w: int
    tile_h: int
    step_x: int
    step_y: int
    xs: Tuple[int, ...]
    ys: Tuple[int, ...]

    @property
    def n_tiles(self) -> int:
        return len(self.xs) * len(self.ys)

    def tiles(self) -> List[Tile]:
        return [Tile(r, c, x, y, self.tile_w, self.tile_h) for r, y in enumerate(self.ys) for c, x in enumerate(self.xs)]

    def row_tiles(self, row: int) -> List[Tile]:
        y = self.ys[row]
        return [Tile(row, c, x, y, self.tile_w, self.tile_h) for c, x in enumerate(self.xs)]

    def covered_pixels(self) -> int:
        """Cells the network processes (tiles incl. padding), for overhead figures."""
        return self.n_tiles * self.tile_w * self.tile_h


def _origins(size: int, tile: int, step: int) -> Tuple[int, ...]:
    xs = [0]
    while xs[-1] + tile < size:
        xs.append(xs[-1] + step)
    return tuple(xs)


def plan_tiles(width: int, height: int, tile_size: int, overlap: float, stride: int = 32) -> TilePlan:
    """Tiles of ``tile_size`` (multiple of ``stride``) overlapping by ``overlap`` (fraction 0-0.75)."""
    if width < 1 or height < 1:
        raise LandformError("The raster to classify is empty.")
    if not 0.0 <= float(overlap) <= 0.75:
        raise LandformError(f"Tile overlap must be between 0 and 0.75 (a fraction of the tile size), not {overlap}.")
    if tile_size < stride or tile_size % stride:
        raise LandformError(f"Tile size must be a multiple of {stride} pixels (the network's output stride), not {tile_size}.")
    tile_w = min(int(tile_size), round_up(width, stride))
    tile_h = min(int(tile_size), round_up(height, stride))

    def step_for(tile):
        return max(stride, int(tile * (1.0 - overlap)) // stride * stride)

    sx, sy = step_for(tile_w), step_for(tile_h)
    return TilePlan(width, height, tile_w, tile_h, sx, sy, _origins(width, tile_w, sx), _origins(height, tile_h, sy))


def hann(n: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float64)
    return np.sin(math.pi * (i + 0.5) / n) ** 2


def weights_1d(n: int, first: bool, last: bool) -> np.ndarray:
    w = hann(n)
    half = n // 2
    if first:
        w[:half] = 1.0
    if last:
        w[half:] = 1.0
    return w


def tile_weights(plan: TilePlan, tile: Tile) -> np.ndarray:
    """Blending weight (tile_h, tile_w) float32 for ``tile`` (edge-aware Hann)."""
    wx = weights_1d(plan.tile_w, tile.col == 0, tile.col == len(plan.xs) - 1)
    wy = weights_1d(plan.tile_h, tile.row == 0, tile.row == len(plan.ys) - 1)
    return np.outer(wy, wx).astype(np.float32)


class Blender:
    """Accumulates weighted tile probabilities in a rolling strip of ``tile_h`` rows.

    Call ``add`` for every tile of tile-row r (any order within the row), then
    ``finish_row(r)``, which returns ``(y0, probs)`` for the rows that no later
    tile touches: probs float32 (C, rows, width), the weighted mean.
    """

    def __init__(self, plan: TilePlan, channels: int):
        self.plan = plan
        self.channels = channels
        self.acc = np.zeros((channels, plan.tile_h, plan.width), dtype=np.float32)
        self.wsum = np.zeros((plan.tile_h, plan.width), dtype=np.float32)
        self.base = 0  # raster row of acc[:, 0]
        self._weights = {}

    def _w(self, tile: Tile) -> np.ndarray:
        key = (tile.row == 0, tile.row == len(self.plan.ys) - 1, tile.col == 0, tile.col == len(self.plan.xs) - 1)
        if key not in self._weights:
            self._weights[key] = tile_weights(self.plan, tile)
        return self._weights[key]

    def add(self, tile: Tile, probs: np.ndarray) -> None:
        """``probs``: (C, tile_h, tile_w) for the whole tile (padding included)."""
        if tile.y0 != self.base:
            raise ValueError(f"tile row at y={tile.y0} added while the strip starts at {self.base}")
        w = self._w(tile)
        cw = min(tile.width, self.plan.width - tile.x0)
        xs = slice(tile.x0, tile.x0 + cw)
        wc = w[:, :cw]
        self.acc[:, :, xs] += probs[:, :, :cw] * wc
        self.wsum[:, xs] += wc

    def finish_row(self, row: int) -> Tuple[int, np.ndarray]:
        plan = self.plan
        last = row == len(plan.ys) - 1
        n = (min(plan.height, self.base + plan.tile_h) - self.base) if last else plan.ys[row + 1] - self.base
        out = self.acc[:, :n] / np.maximum(self.wsum[:n], np.float32(1e-12))
        y0 = self.base
        if not last:
            self.acc[:, : plan.tile_h - n] = self.acc[:, n:]
            self.acc[:, plan.tile_h - n :] = 0.0
            self.wsum[: plan.tile_h - n] = self.wsum[n:]
            self.wsum[plan.tile_h - n :] = 0.0
            self.base += n
        return y0, out


def column_groups(plan: TilePlan, max_width: int = 8192) -> Iterator[List[int]]:
    """Groups of tile-column indices whose union spans at most ~max_width cells (for strip reads)."""
    group: List[int] = []
    for c, x in enumerate(plan.xs):
        if group and (x + plan.tile_w - plan.xs[group[0]]) > max_width:
            yield group
            group = []
        group.append(c)
    if group:
        yield group
