"""Classify a DEM with a model file: lattice-anchored tiles, computed block by block.

Pipeline (``classify_raster``)
------------------------------
1. Output grid = the DEM's own grid (or the part of it an extent selects,
   snapped outward to whole DEM cells). Several DEM files are mosaicked into
   one virtual raster first.
2. Processing lattice (``core.grid``): the model's ground pixel size on a
   lattice fixed on the Earth (UTM zones for geographic DEMs, the DEM's own
   CRS for projected ones), so a cell's class does not depend on the file's
   extent or on how a country was cut into tiles.
3. Tiles (``core.tiling``) anchored to that lattice: by default they abut and
   each is predicted with ``margin`` cells of context (cropped from its output;
   the margin is the network's measured reach, see DEFAULT_MARGIN) and the input
   halo its factors and normalisation need (``inputs.halo_pixels``), so a
   cell's input never depends on the tile or the block. Tiles run in batches
   of a fixed size and shape (the last one padded) with ``model.eval()``,
   BatchNorm folded into the convolutions and ``torch.inference_mode``
   (autocast bf16/fp16 on CUDA).
4. Blocks (``core.blocks``): the lattice is cut into blocks of whole tiles;
   each block is one task (in this process or on a Dask cluster) that writes
   its probabilities as a GeoTIFF in the run folder. When the lattice is the
   DEM's own grid the block writes the final classes and confidence directly,
   tile by tile in a background thread while the network runs the next one;
   otherwise a second stage brings the probabilities back onto the DEM grid
   block by block (bilinear, renormalised over valid lattice cells; zones
   blended by longitude) and turns them into classes there.
5. Outputs: class raster (Byte, NoData 0, colour table and category names)
   and confidence raster (Float32, NoData -1, or Byte 0-250 with NoData 255
   and scale 1/250 with ``confidence_byte``; one band per class with its
   softmax probability, named after the class, plus "Top-class confidence",
   the probability of the class written to the class raster). DEM NoData ->
   class 0 and NoData confidence. Classes are the argmax over the landform
   classes (code >= 1) for every valid DEM cell: "no data" is never
   predicted where there is elevation. Both outputs are assembled from the
   blocks by GDAL and renamed into place together on success.
"""
import atexit
import contextlib
import math
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from . import allocator
from . import blocks as blocks_mod
from . import inputs as inputs_mod
from .devices import CHOICES as DEVICE_CHOICES
from .devices import autocast_dtype, resolve_device
from .errors import LandformError, import_torch
from .grid import (
    LatticeReader,
    Zone,
    describe_zones,
    fixed_scale,
    lattice_dataset,
    mosaic_vrt,
    output_footprint,
    output_longitudes,
    processing_zones,
    warp_to_window,
    zone_weights,
)
from .outputs import check_output_path
from .progress import Progress
from .rasters import (
    RasterInfo,
    Window,
    _quiet_gdal,
    mean_cell_size_m,
    open_raster,
    read_band,
    read_window,
    require_crs,
    require_some_data,
)
from .schema import add_cli_options, from_cli, option
from .smoothing import reach_cells, smooth_probabilities
from .tiling import Box, TileGrid, accumulate, iter_batches, plan_tiles, round_up

CONFIDENCE_NODATA = -1.0
# Byte confidence (option): probability p stored as round(250 p), NoData 255, band scale 1/250 so
# QGIS and GDAL (with unscaling) read 0-1 again; at most 0.002 from the float value, a quarter of
# the float raster's size and write time.
BYTE_STEPS = 250
BYTE_NODATA = 255
TOP_BAND_NAME = "Top-class confidence"
# Tiles abut (overlap 0: every cell is predicted once, by the tile that holds it) and each is
# predicted with DEFAULT_MARGIN cells of context on every side, cropped from its output. The margin
# comes from the curve of bench/receptive_field.py: the bundled FCN-ResNet18 on the Boulder sample
# (90 m, held out), windows of 512 cells predicted alone vs one whole-raster pass, both smoothed as
# classification smooths them (sigma 5), by distance to the window's border (cells):
#     distance        0-8    32-48   64-96   96-128  128-160  160-192  192-256  256-384
#     class changes % 10.8   0.63    0.18    0.055   0.013    0.0023   0        0
#     mean max |dp|   7.3e-2 7.4e-3  2.4e-3  7.0e-4  1.1e-4   2.2e-5   7.0e-7   1.9e-8
# With 128 cells of context a kept cell is at least 128 cells from any cut: on a 2048 tile fewer than
# 1 cell in 10^4 changes class against a whole-raster pass (only the 128-192 band, 12 % of the tile,
# changes at all), for a network input of (2048 + 256)^2 / 2048^2 = 1.27x the cells (the
# previous default, 1024 tiles at 25 % overlap with a 32-cell margin, fed the network 2.1x).
# (Earlier bundled models reached about as far: 0.015 % at 128-160 and none beyond without
# smoothing; 0.058 % at 128-160 and 0.0062 % at 160-192 for the first, with windows of 384.)
# A random-weight FCN-ResNet50 (BatchNorm statistics from the DEM) reaches further (0.48 % at
# 192-256 cells): models with a wider reach need a larger MARGIN, which the parameter allows.
DEFAULT_MARGIN = 128
# Past the raster's own edge there is no neighbour tile to agree with, only mirrored terrain: abutting
# tiles there take one output stride of it (32 cells) instead of the full margin, which saves 2 x 96
# cells of network input per row and column of tiles (an 8192^2 DEM in 2048 tiles: 1.35x -> 1.29x).
# Every abutting tiling cuts its edge tiles at the same place, so they all agree there too.
# (Blended tiles keep the full margin: they reach past the edge by up to a tile anyway.)
OUTER_MARGIN_STRIDES = 1
# Default tile: 2048 cells (the model's own tile size if larger), one tile per batch: a
# 2304^2 input of FCN-ResNet18 peaks at about 0.8 GB of activations on the CPU.
DEFAULT_TILE = 2048
EDGE_PAD_STRIDES = 2  # blend mode: a raster smaller than a tile is one tile reaching 2 output strides past its edges
DEFAULT_OVERLAP = 0.0
DEFAULT_BATCH = 1
OUTPUT_BLOCK_CAP = 2048  # output cells per side of a resampling block (bounds its memory)
FINALISE_ROWS = 512  # rows of a block turned into classes and confidence at a time
# Test-time averaging over the symmetries of the square grid (option "steady"). The landform classes
# do not depend on the map's orientation, but a CNN's output does a little (its 32-cell stride and
# learnt filters): flipping or rotating the DEM changes a few % of cells at class boundaries
# (bench/robustness.py). Averaging the probabilities of the 8 flipped / rotated copies of each tile
# makes the map the same whatever the orientation, for 8x the forward passes; the 4 flips are the
# cheaper half. It does not remove the network's dependence on where the terrain falls on its
# stride (a one-cell shift still changed 1.5 % of cells), nor steady it under noise (3 m of noise:
# 2.3 % of cells changed without, 2.2 % with), measured for the model bundled before the present
# one, without smoothing. Smoothing the probabilities (core.smoothing, default sigma 5 cells) takes
# out most of the stride's speckle at 1/20 of a forward pass: for the bundled model a one-cell
# shift 1.8 -> 0.82 %, flips 3.7 -> 2.1 %; with it and "all", flips 0.79 % and a shift 0.48 %.
VIEWS = {"off": 1, "flips": 4, "all": 8}
DEFAULT_SMOOTHING = 5.0
# The smoothing reaches 3 sigma + 8 cells: at 16 that is 56, so a kept cell's value still comes from
# cells at least 72 cells inside the default 128-cell margin, where tiles agree with a whole pass.
MAX_SMOOTHING = 16.0


# ----------------------------------------------------------------------------- device / model


class Predictor:
    """A loaded model on a device: ``probabilities(batch)`` -> softmax float32 numpy."""

    def __init__(self, model, spec: dict, device):
        torch = import_torch()
        self.torch = torch
        self.model = model.eval()
        self.spec = spec
        self.device = device
        self.cuda = device.type == "cuda"
        self.dtype = autocast_dtype(device, cpu=False)  # CUDA only: float32 on the CPU
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_s = 0.0
        self.forward_pixels = 0
        self.lock = threading.Lock()
        self.reuse_heap = False  # CPU: the forward pass reuses freed heap memory (the REUSE_MEMORY option)

    @classmethod
    def from_file(cls, model_path: str, device: str = "auto") -> "Predictor":
        from .modelfile import load_model

        dev = resolve_device(device)  # first: a clear MissingDependency when torch is absent
        model, spec = load_model(model_path, device=dev)
        from .nets.common import fuse_batchnorm

        return cls(fuse_batchnorm(model.eval()), spec, dev)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        t0 = time.perf_counter()
        with self.lock, torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=self.dtype, enabled=self.dtype is not None):
                    logits = self.model(x)
                probs = _softmax_in_place(logits.float()).cpu().numpy()
            else:
                with allocator.heap_reused_during() if self.reuse_heap else contextlib.nullcontext():
                    probs = _softmax_in_place(self.model(x).float()).numpy()
        self.forward_s += time.perf_counter() - t0
        self.forward_pixels += batch.shape[0] * batch.shape[2] * batch.shape[3]
        return probs


def _softmax_in_place(logits):
    """Softmax over the class axis in the logits' own memory (one tile-sized tensor less at the
    forward pass's end than torch.softmax)."""
    logits -= logits.amax(dim=1, keepdim=True)
    logits.exp_()
    logits /= logits.sum(dim=1, keepdim=True)
    return logits


_PREDICTORS: Dict[tuple, Predictor] = {}


def _predictor_key(model_path: str, device: str) -> tuple:
    st = os.stat(model_path)
    return (os.path.abspath(model_path), st.st_size, st.st_mtime_ns, device)


def cached_predictor(model_path: str, device: str) -> Predictor:
    """One loaded model per process (a Dask worker loads it once, not once per block)."""
    key = _predictor_key(model_path, device)
    if key not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[key] = Predictor.from_file(model_path, device)
    return _PREDICTORS[key]


# ----------------------------------------------------------------------------- one zone's tiles


class ZoneModel:
    """The tiles of one zone and how to turn a tile into network input and probabilities."""

    def __init__(self, job: "ClassifyJob", zone_index: int, predictor: Predictor):
        self.zone: Zone = job.zones[zone_index]
        self.predictor = predictor
        spec = predictor.spec
        self.factors = list(spec["input_factors"])
        self.normalisation = spec["normalisation"]
        self.px = job.pixel_size_m
        self.halo = inputs_mod.halo_pixels(self.factors, self.normalisation, self.px)
        self.grid: TileGrid = job.tile_grid(zone_index)
        self.batch = job.batch_size
        self.views = job.views
        self.smoothing = job.smoothing
        self.reader = LatticeReader(job.dem, job.band, job.dem_info, self.zone, self.px)
        self.read_s = 0.0
        # One reader thread for all the zone's blocks (it alone uses self.reader's GDAL handle), so
        # the next block's first input can be read while this block's last tile is predicted.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landform-read")
        self._prefetched: Dict[tuple, object] = {}  # tuple of a batch's tiles -> its inputs being read

    def close(self) -> None:
        """Stop the reader thread (after a read in flight) and release the DEM."""
        self._pool.shutdown(wait=True)
        self._prefetched.clear()
        self.reader.close()

    def tile_input(self, tile) -> Tuple[np.ndarray, np.ndarray]:
        """(C, h + 2 margin, w + 2 margin) network input of a tile, and the DEM's valid mask on the
        tile itself (h, w): the cells that get a class.

        A projected DEM's edges are straight lines of the lattice's CRS: context past them is
        mirrored there (the same for any crop that shares the edge). A geographic DEM's edges
        are curves in its UTM zone, and the box around them moves with the crop's extent: there
        the window is read as it is and cells the DEM does not cover are NoData (filled), so a
        crop, or a zone's end, changes nothing but the cells it removes.
        """
        t0 = time.perf_counter()
        (ml, mt, mr, mb), h = self.grid.margins(tile), self.halo
        x0, y0, x1, y1 = tile.x0 - ml, tile.y0 - mt, tile.x0 + tile.width + mr, tile.y0 + tile.height + mb
        px = np.full(y1 - y0 + 2 * h, self.px)
        if self.zone.lon_range is not None:  # a UTM zone of a geographic DEM
            elev = self.reader.read((x0 - h, y0 - h, x1 + h, y1 + h), clip=False)
            chans, valid = inputs_mod.make_input(elev, h, self.factors, self.normalisation, self.px, px, px)
            self.read_s += time.perf_counter() - t0
            return chans, _crop(valid, tile, x0, y0)
        d0, e0, d1, e1 = self.zone.domain
        rx0, ry0, rx1, ry1 = max(x0, d0), max(y0, e0), min(x1, d1), min(y1, e1)
        elev = self.reader.read((rx0 - h, ry0 - h, rx1 + h, ry1 + h))
        box = (e0 - (ry0 - h), e1 - (ry0 - h), d0 - (rx0 - h), d1 - (rx0 - h))  # where the DEM lies in elev
        px = px[: elev.shape[0]]
        chans, valid = inputs_mod.make_input(elev, h, self.factors, self.normalisation, self.px, px, px, raster_box=box)
        pads = ((0, 0), (ry0 - y0, y1 - ry1), (rx0 - x0, x1 - rx1))
        if any(p for pair in pads for p in pair):
            chans = inputs_mod.reflect_pad(chans, pads)
        window_valid = np.zeros((y1 - y0, x1 - x0), bool)  # the tile may reach past the domain
        window_valid[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0] = valid
        self.read_s += time.perf_counter() - t0
        return chans, _crop(window_valid, tile, x0, y0)

    def predict_pieces(self, box: Box, progress: Progress, emit: Callable[[Box, np.ndarray, np.ndarray], None],
                       next_box: Optional[Box] = None) -> None:
        """Probabilities of the lattice cells ``box`` from every tile touching it, handed to
        ``emit(piece, probabilities (C, h, w), valid (h, w))`` piece by piece: each tile's share of
        the box as soon as it is predicted when tiles abut (memory: one tile, whatever the block
        size), the whole box once when they are blended.

        Inputs of the next batch are prepared in the reader thread while the network runs; with
        ``next_box`` (the block this process runs next), the next block's first batch too.
        """
        tiles = self.grid.tiles_touching(box)
        c0, r0, c1, r1 = box
        acc = wsum = blend_valid = None
        if self.grid.blend:  # tiles reach past the box: its valid mask is read on its own
            acc = np.zeros((len(self.predictor.spec["classes"]), r1 - r0, c1 - c0), np.float32)
            wsum = np.zeros((r1 - r0, c1 - c0), np.float32)
            blend_valid = self._pool.submit(self.reader.read, box)
        batches = list(iter_batches(tiles, self.batch, self.grid.margins))
        future = self._submit_inputs(batches[0]) if batches else None
        try:
            for i, batch in enumerate(batches):
                progress.check()
                x, valids = future.result()
                future = None
                if i + 1 < len(batches):
                    future = self._submit_inputs(batches[i + 1])
                elif next_box is not None and acc is None:
                    self._prefetch(next_box)
                probs = self._forward(x, self.grid.margins(batch[0]), batch)
                for t, p, v in zip(batch, probs, valids):
                    if acc is not None:
                        accumulate(acc, wsum, box, t, p, self.grid.weights(t))
                        continue
                    tx0, ty0 = t.x0, t.y0
                    a0, b0, a1, b1 = max(c0, tx0), max(r0, ty0), min(c1, tx0 + t.width), min(r1, ty0 + t.height)
                    emit((a0, b0, a1, b1), p[:, b0 - ty0 : b1 - ty0, a0 - tx0 : a1 - tx0],
                         v[b0 - ty0 : b1 - ty0, a0 - tx0 : a1 - tx0])
                # the writer holds what it still needs: these tile-sized arrays must not live on
                # through the next forward pass (FCN-ResNet18, 2304^2 tiles: 0.13 GB)
                x = valids = probs = p = v = None
                progress.update(100.0 * (i + 1) / len(batches))
        finally:
            if future is not None:  # an error or a cancel: a read in flight finishes unused
                future.cancel()
        if acc is not None:
            np.divide(acc, np.maximum(wsum, np.float32(1e-12)), out=acc)
            emit(box, acc, np.isfinite(blend_valid.result()))

    def _submit_inputs(self, batch):
        """The batch's inputs: read already by ``_prefetch``, or now in the reader thread."""
        return self._prefetched.pop(tuple(batch), None) or self._pool.submit(self._inputs, batch)

    def _prefetch(self, box: Box) -> None:
        """Start reading the first batch of ``box``; the block after this one takes it up."""
        self._prefetched.clear()  # at most one block ahead
        first = next(iter_batches(self.grid.tiles_touching(box), self.batch, self.grid.margins), None)
        if first:
            self._prefetched[tuple(first)] = self._pool.submit(self._inputs, first)

    def _inputs(self, batch) -> Tuple[np.ndarray, List[np.ndarray]]:
        """A batch's network input (batch, C, h, w) and each tile's valid mask."""
        pairs = [self.tile_input(t) for t in batch]
        x = np.stack([c for c, _ in pairs])
        if len(batch) < self.batch:  # a fixed batch size: every tile goes through the same kernels
            x = np.concatenate([x, np.repeat(x[-1:], self.batch - len(batch), axis=0)])
        return x, [v for _, v in pairs]

    def _forward(self, x: np.ndarray, margins: Tuple[int, int, int, int], tiles) -> np.ndarray:
        """Probabilities of ``tiles`` (the batch ``x`` without its padding copies), smoothed over
        each tile's whole window (context included) and cropped to the tiles."""
        probs = averaged_over_views(self.predictor.probabilities, x, self.views)[: len(tiles)]
        if self.smoothing > 0:  # over the tile and the context the smoothing reaches (no further: it costs)
            r = reach_cells(self.smoothing)
            ml, mt, mr, mb = margins
            el, et, er, eb = min(r, ml), min(r, mt), min(r, mr), min(r, mb)
            probs = probs[:, :, mt - et : probs.shape[2] - mb + eb, ml - el : probs.shape[3] - mr + er]
            for p, t in zip(probs, tiles):
                smooth_probabilities(p, self.smoothing, (t.x0 - el, t.y0 - et))
            margins = (el, et, er, eb)
        ml, mt, mr, mb = margins
        return probs[:, :, mt : probs.shape[2] - mb, ml : probs.shape[3] - mr]


def strips(y: int, height: int) -> List[Tuple[int, int]]:
    """Row ranges [r0, r1) of a piece written at row ``y`` of a block file: at most FINALISE_ROWS
    rows each, ending on the file's tile rows, so that each strip is written out (and leaves GDAL's
    cache) as whole tiles. Flushing once per piece kept a 2048^2 piece's confidence (0.1 GB) in
    the cache: 8192^2 with FCN-ResNet18, one process, peak RSS 1.42-1.52 -> 1.28-1.31 GB."""
    step = blocks_mod.BLOCK_TILE
    out, r = [], 0
    while r < height:
        end = min(height, ((y + r) // step * step + FINALISE_ROWS) - y)
        out.append((r, end))
        r = end
    return out


def _crop(valid: np.ndarray, tile, x0: int, y0: int) -> np.ndarray:
    """The part of a valid mask whose top-left cell is global (x0, y0) that covers ``tile``."""
    return valid[tile.y0 - y0 : tile.y0 - y0 + tile.height, tile.x0 - x0 : tile.x0 - x0 + tile.width]


def dihedral_views(n: int) -> List[Tuple[bool, bool, bool]]:
    """The first ``n`` (1, 4 or 8) symmetries of the square as (transpose, flip rows, flip columns):
    identity, the flips, then the same after a transpose (rotations and diagonal mirrors)."""
    return [(t, fr, fc) for t in (False, True) for fr in (False, True) for fc in (False, True)][:n]


def _view(a: np.ndarray, v: Tuple[bool, bool, bool], inverse: bool = False) -> np.ndarray:
    t, fr, fc = v
    if t and not inverse:
        a = a.swapaxes(-1, -2)
    if fr:
        a = a[..., ::-1, :]
    if fc:
        a = a[..., ::-1]
    if t and inverse:
        a = a.swapaxes(-1, -2)
    return a


def averaged_over_views(probabilities: Callable[[np.ndarray], np.ndarray], x: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``probabilities`` over the ``n`` flipped / rotated copies of the (N, C, H, W)
    batch ``x``, each brought back to ``x``'s orientation (n = 1: one plain pass)."""
    if n <= 1:
        return probabilities(x)
    acc = None
    for v in dihedral_views(n):
        p = _view(probabilities(np.ascontiguousarray(_view(x, v))), v, inverse=True)
        acc = p.copy() if acc is None else acc + p
    return acc * np.float32(1.0 / n)


def confidence_to_byte(conf: np.ndarray) -> np.ndarray:
    """Float confidence (NoData CONFIDENCE_NODATA) as Byte: round(BYTE_STEPS * p), NoData BYTE_NODATA."""
    out = np.rint(np.clip(conf, 0.0, 1.0) * BYTE_STEPS).astype(np.uint8)
    out[conf == CONFIDENCE_NODATA] = BYTE_NODATA
    return out


def finalise(probs: np.ndarray, valid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(classes uint8 (h,w), confidence float32 (C+1,h,w)) from probabilities and the DEM's valid mask.

    Where the DEM has elevation, "no data" is not an answer: its probability is set to 0 and the
    landform probabilities renormalised to sum to 1 (next to a raster's edge the network gives
    "no data" some weight for the missing context, not for the terrain). Cells with a non-finite
    probability get class 0 and NoData confidence.

    Written into the confidence array itself, with the copies for non-finite values only made
    when there are any: 2048^2 cells in 0.08-0.12 s instead of 0.18-0.48 s, the same values.
    """
    n = probs.shape[0]
    conf = np.empty((n + 1,) + probs.shape[1:], np.float32)
    land = probs[1:].sum(axis=0)
    finite = np.isfinite(land)  # false where any landform probability is NaN or infinite
    ok = valid & finite & np.isfinite(probs[0])
    if not finite.all():
        probs = np.where(np.isfinite(probs), probs, np.float32(0))
        land = probs[1:].sum(axis=0)
    np.divide(probs[1:], np.where(land > 0, land, np.float32(1)), out=conf[1:n])
    conf[0] = 0.0
    cls = (np.argmax(conf[1:n], axis=0) + 1).astype(np.uint8)
    np.max(conf[1:n], axis=0, out=conf[n])  # the top class's probability
    bad = ~ok
    if bad.any():
        cls[bad] = 0
        conf[:, bad] = CONFIDENCE_NODATA
    return cls, conf


# ----------------------------------------------------------------------------- the job


class BlockWriter:
    """Writes the pieces of one block into its block files in a background thread.

    ``submit(piece, probs, valid)`` returns as soon as the previous piece is written (at most one
    waits, so memory stays at about two pieces) while the network goes on with the next tile.
    ``finalise``: turn probabilities into classes and confidence (``finalise``) in strips of
    FINALISE_ROWS rows; else write the probabilities and the valid mask as they are. The files
    are renamed into place when the block ends without an error, removed otherwise.
    """

    def __init__(self, files: Sequence[blocks_mod.BlockFile], box: Box, n_classes: int, finalise: bool):
        self.files, self.box, self.finalise = list(files), box, finalise
        self.counts = np.zeros(n_classes, np.int64) if finalise else None
        self.seconds = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landform-write")
        self._pending = None

    def __enter__(self) -> "BlockWriter":
        return self

    def submit(self, piece: Box, probs: np.ndarray, valid: np.ndarray) -> None:
        self._wait()
        self._pending = self._pool.submit(self._write, piece, probs, valid)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write(self, piece: Box, probs: np.ndarray, valid: np.ndarray) -> None:
        t0 = time.perf_counter()
        x, y = piece[0] - self.box[0], piece[1] - self.box[1]
        for r0, r1 in strips(y, probs.shape[1]):
            p, v = probs[:, r0:r1], valid[r0:r1]
            if not self.finalise:
                self.files[0].write(np.concatenate([p, v[None].astype(np.float32)]), y + r0, x)
            else:
                cls, conf = finalise(p, v)
                self.files[0].write(cls, y + r0, x)
                if len(self.files) > 1:
                    as_byte = self.files[1].spec.data_type == gdal.GDT_Byte
                    self.files[1].write(confidence_to_byte(conf) if as_byte else conf, y + r0, x)
                self.counts += np.bincount(cls.ravel(), minlength=len(self.counts))[: len(self.counts)]
            for f in self.files:
                f.flush()
        self.seconds += time.perf_counter() - t0

    def __exit__(self, exc_type, exc, tb) -> bool:
        failed = exc
        if failed is None:
            try:
                self._wait()
            except BaseException as err:  # the write's own error (disk full, ...)
                failed = err
        self._pool.shutdown(wait=True)  # a write already running finishes before its files close
        for f in self.files:  # renamed into place, or removed after an error
            try:
                f.__exit__(type(failed) if failed is not None else None, failed, None)
            except BaseException as err:
                failed = failed or err
        if failed is not None and failed is not exc:
            raise failed
        return False


@dataclass(frozen=True)
class OutputGrid:
    width: int
    height: int
    geotransform: Tuple[float, ...]
    crs_wkt: str

    def window_gt(self, win: Window) -> Tuple[float, ...]:
        gt = self.geotransform
        return (gt[0] + win.x0 * gt[1], gt[1], 0.0, gt[3] + win.y0 * gt[5], 0.0, gt[5])

    def as_tuple(self):
        return (self.width, self.height, self.geotransform, self.crs_wkt)


_WORKER_STATE: Dict[str, dict] = {}  # per process: zone models (model, GDAL handles) of the current job


def release_worker_state() -> None:
    """Close the GDAL handles a run kept open in this process (its zone readers, block VRTs, DEM)."""
    for state in _WORKER_STATE.values():
        for zm in state["zones"].values():
            zm.close()
        state["zones"].clear()
        state["vrts"].clear()
        state["dem"] = None
    _WORKER_STATE.clear()


atexit.register(release_worker_state)  # before GDAL's own teardown, in workers too


@dataclass(frozen=True)
class ClassifyJob:
    """Everything a block task needs, as paths and numbers (sent to Dask workers as is)."""

    dem: str
    band: int
    dem_info: RasterInfo
    model: str
    device: str
    classes: Tuple[Tuple[int, Tuple[int, int, int], str], ...]
    pixel_size_m: float
    tile: int
    overlap: float
    margin: int
    stride: int
    batch_size: int
    block_size: int
    zones: Tuple[Zone, ...]
    out: OutputGrid
    outputs: Tuple[blocks_mod.OutputSpec, ...]
    run_dir: str
    fingerprint: str
    cog: bool = False
    views: int = 1  # flipped / rotated copies of each tile whose probabilities are averaged (dihedral_views)
    smoothing: float = 0.0  # sigma (lattice cells) of the Gaussian low-pass of the probabilities (core.smoothing)
    raw_blocks: bool = False  # block files uncompressed (this process alone writes and reads them back)
    reuse_memory: bool = False  # the CPU forward pass reuses freed heap memory (core.allocator)
    # seconds the client spent assembling the outputs (set by ``assemble``, read by the summary)
    assemble_s: float = field(default=0.0, compare=False)

    @property
    def same_grid(self) -> bool:
        return len(self.zones) == 1 and self.zones[0].same_grid

    def tile_grid(self, z: int) -> TileGrid:
        outer = -1 if self.overlap > 0 else min(self.margin, OUTER_MARGIN_STRIDES * self.stride)
        return plan_tiles(self.zones[z].domain, self.tile, self.overlap, self.stride, self.margin, self.edge_pad, outer)

    @property
    def edge_pad(self) -> int:
        """Cells a tile reaches past the domain's edge (mirrored context there comes from the margin when cropping)."""
        return EDGE_PAD_STRIDES * self.stride if self.overlap > 0 else 0

    # -- tasks

    def stages(self) -> List[List[blocks_mod.Task]]:
        predict = [
            blocks_mod.Task(0, f"z{z}_{_box_key(box)}", (z, box))
            for z in range(len(self.zones))
            for box in self.tile_grid(z).block_boxes(self.block_size)
        ]
        if self.same_grid:
            return [predict]
        size = max(64, min(self.block_size, OUTPUT_BLOCK_CAP))
        from .rasters import block_windows

        wins = block_windows(self.out.width, self.out.height, size, size)
        resample = [blocks_mod.Task(1, f"out_{w.x0}_{w.y0}", (w,)) for w in wins]
        return [predict, resample]

    def run_task(self, task: blocks_mod.Task, progress: Progress) -> dict:
        state = self._state()
        if task.stage == 0:
            return self._predict_block(state, *task.args, task.key, progress)
        return self._resample_block(state, *task.args, task.key, progress)

    def _state(self) -> dict:
        state = _WORKER_STATE.get(self.fingerprint)
        if state is None:
            release_worker_state()
            predictor = cached_predictor(self.model, self.device)
            state = {"predictor": predictor, "zones": {}, "vrts": {}, "dem": None, "next": None}
            _WORKER_STATE[self.fingerprint] = state
        state["predictor"].reuse_heap = self.reuse_memory
        return state

    def runs_next(self, task: Optional[blocks_mod.Task]) -> None:
        """In this process, the task that follows the one about to run (None: the last one): a
        prediction block starts reading its successor's first tile while predicting its own last."""
        self._state()["next"] = task

    def _zone_model(self, state: dict, z: int) -> "ZoneModel":
        if z not in state["zones"]:
            state["zones"][z] = ZoneModel(self, z, state["predictor"])
        return state["zones"][z]

    def _predict_block(self, state, z: int, box: Box, key: str, progress: Progress) -> dict:
        zm = self._zone_model(state, z)
        pred = state["predictor"]
        f0, s0, r0, t0 = pred.forward_pixels, pred.forward_s, zm.read_s, time.perf_counter()
        nxt = state.get("next")
        next_box = nxt.args[1] if nxt is not None and nxt.stage == 0 and nxt.args[0] == z else None
        with self._block_writer(z, box, key) as writer:
            zm.predict_pieces(box, progress, writer.submit, next_box)
        stats = {"tiles": len(zm.grid.tiles_touching(box)), "forward_pixels": pred.forward_pixels - f0,
                 "forward_s": pred.forward_s - s0, "read_s": zm.read_s - r0, "device": str(pred.device),
                 "write_s": writer.seconds, "seconds": time.perf_counter() - t0}
        if writer.counts is not None:
            stats["counts"] = [int(c) for c in writer.counts]
        return stats

    def _block_writer(self, z: int, box: Box, key: str) -> "BlockWriter":
        """Where a lattice block's pieces go: the final classes and confidence when the lattice is
        the DEM's grid, else the zone's probabilities and valid mask for the resampling stage."""
        w, h = box[2] - box[0], box[3] - box[1]
        if self.same_grid:
            d0, e0 = self.zones[0].domain[:2]
            win = Window(box[0] - d0, box[1] - e0, w, h)
            return BlockWriter(self._class_files(win, key), box, len(self.classes), finalise=True)
        n = len(self.classes) + 1
        spec = blocks_mod.OutputSpec(f"zone{z}", "", gdal.GDT_Float32, tuple(["p"] * n), None)
        lat = self.zones[z].lattice
        f = blocks_mod.BlockFile(self._zone_block(z, key), w, h, n, lat.geotransform(box[0], box[1]), lat.crs_wkt, spec,
                                 compress=not self.raw_blocks)
        return BlockWriter([f], box, len(self.classes), finalise=False)

    def _zone_block(self, z: int, key: str) -> str:
        return blocks_mod.block_path(self.run_dir, f"zone{z}", key)

    def _class_files(self, win: Window, key: str) -> List[blocks_mod.BlockFile]:
        gt = self.out.window_gt(win)
        return [blocks_mod.BlockFile(blocks_mod.block_path(self.run_dir, spec.key, key), win.width, win.height,
                                     spec.bands, gt, self.out.crs_wkt, spec, compress=not self.raw_blocks)
                for spec in self.outputs]

    def block_bytes(self) -> int:
        """Bytes of all the run's block files uncompressed."""
        n = self.out.width * self.out.height * sum(s.bands * gdal.GetDataTypeSize(s.data_type) // 8 for s in self.outputs)
        if not self.same_grid:  # the zones' probabilities and valid mask, float32
            cells = sum((z.domain[2] - z.domain[0]) * (z.domain[3] - z.domain[1]) for z in self.zones)
            n += cells * (len(self.classes) + 1) * 4
        return n

    def _write_classes(self, probs, valid, win: Window, key: str) -> dict:
        """Classes and confidence of an output window (the resampling stage's block)."""
        with BlockWriter(self._class_files(win, key), (0, 0, win.width, win.height), len(self.classes), True) as w:
            w.submit((0, 0, win.width, win.height), probs, valid)
        return {"counts": [int(c) for c in w.counts]}

    def after_stage(self, tasks: Sequence[blocks_mod.Task]) -> None:
        """After the lattice blocks: one VRT per zone, read by the resampling stage."""
        if self.same_grid or not tasks or tasks[0].stage != 0:
            return
        for z in range(len(self.zones)):
            files = [self._zone_block(z, t.key) for t in tasks if t.args[0] == z]
            with _quiet_gdal():
                vrt = gdal.BuildVRT(self._zone_vrt(z), files)
            if vrt is None:
                raise LandformError(f"Could not gather the blocks of zone {self.zones[z].name}: {gdal.GetLastErrorMsg()}")
            vrt = None

    def _zone_vrt(self, z: int) -> str:
        return os.path.join(self.run_dir, f"zone{z}.vrt")

    def _resample_block(self, state, win: Window, key: str, progress: Progress) -> dict:
        t0 = time.perf_counter()
        n_cls = len(self.classes)
        total = np.zeros((n_cls, win.height, win.width), np.float64)
        wtotal = np.zeros((win.height, win.width), np.float64)
        lon = output_longitudes(self.out.crs_wkt, self.out.geotransform, win) if self.dem_info.is_geographic else None
        for z, zone in enumerate(self.zones):
            wz = zone_weights(lon, zone.lon_range) if lon is not None else np.ones((win.height, win.width))
            if not (wz > 0).any():
                continue
            pz = self._zone_probabilities(state, z, win)
            ok = np.isfinite(pz).all(axis=0) & (wz > 0)
            total[:, ok] += pz[:, ok] * wz[ok]
            wtotal[ok] += wz[ok]
        with np.errstate(invalid="ignore", divide="ignore"):
            probs = (total / wtotal).astype(np.float32)
        valid = self._dem_valid(state, win)
        stats = self._write_classes(probs, valid, win, key)
        stats["seconds"] = stats["write_s"] = time.perf_counter() - t0
        return stats

    def _zone_probabilities(self, state, z: int, win: Window) -> np.ndarray:
        """Probabilities of zone ``z`` on output window ``win``: bilinear, renormalised over valid lattice cells."""
        zone = self.zones[z]
        n = len(self.classes)
        box = output_footprint(zone, self.out.crs_wkt, self.out.geotransform, win)
        lat = self._read_zone(state, z, box)  # (n + 1, h, w): probabilities, valid
        p, v = lat[:n], np.nan_to_num(lat[n], nan=0.0)
        pv = np.nan_to_num(p, nan=0.0) * v
        mem = lattice_dataset(zone.lattice, box, np.concatenate([pv, v[None], p]))
        scale = fixed_scale(self.pixel_size_m, mean_cell_size_m(self.dem_info))
        out = warp_to_window(mem, self.out.crs_wkt, self.out.geotransform, win, scale)
        pvw, vw, pw = out[:n], out[n], out[n + 1 :]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(vw > 1e-6, pvw / vw, pw)

    def _read_zone(self, state, z: int, box: Box) -> np.ndarray:
        if z not in state["vrts"]:
            state["vrts"][z] = gdal.Open(self._zone_vrt(z))
        ds = state["vrts"][z]
        d0, e0, d1, e1 = self.zones[z].domain
        c0, r0, c1, r1 = box
        out = np.full((ds.RasterCount, r1 - r0, c1 - c0), np.nan, np.float32)
        a0, b0, a1, b1 = max(c0, d0), max(r0, e0), min(c1, d1), min(r1, e1)
        if a1 > a0 and b1 > b0:
            arr = ds.ReadAsArray(a0 - d0, b0 - e0, a1 - a0, b1 - b0)
            ds.FlushCache()  # each lattice block is read about once: keep GDAL's cache small
            if arr is None:
                raise LandformError(f"Could not read the block files of zone {self.zones[z].name}: {gdal.GetLastErrorMsg()}")
            out[:, b0 - r0 : b1 - r0, a0 - c0 : a1 - c0] = arr.reshape(ds.RasterCount, b1 - b0, a1 - a0)
        return out

    def _dem_valid(self, state, win: Window) -> np.ndarray:
        if state["dem"] is None:
            ds = gdal.Open(self.dem)
            state["dem"] = (ds, ds.GetRasterBand(self.band))
        valid = np.isfinite(read_window(state["dem"][1], win, self.dem_info.nodata))
        state["dem"][0].FlushCache()
        return valid

    def assemble(self, progress: Progress) -> None:
        t0 = time.perf_counter()
        files = {}
        tasks = self.stages()[-1]
        for spec in self.outputs:
            files[spec.key] = [blocks_mod.block_path(self.run_dir, spec.key, t.key) for t in tasks]
        blocks_mod.assemble(self.outputs, files, self.out.as_tuple(), self.run_dir, self.cog, progress,
                            inputs=[self.dem, self.model])
        # the job is frozen for what travels to the workers; assembly runs on the client after them
        object.__setattr__(self, "assemble_s", time.perf_counter() - t0)


def _box_key(box: Box) -> str:
    return "_".join(str(v) for v in box).replace("-", "m")


# ----------------------------------------------------------------------------- building and running a job


def _subset_to_extent(info: RasterInfo, extent, run_dir: str) -> Optional[str]:
    """A VRT of the DEM cells covering ``extent`` (xmin, ymin, xmax, ymax in the DEM's CRS), or None for all."""
    xmin, ymin, xmax, ymax = (float(v) for v in extent)
    gt = info.geotransform
    c0 = int(math.floor((xmin - gt[0]) / gt[1] + 1e-9))
    c1 = int(math.ceil((xmax - gt[0]) / gt[1] - 1e-9))
    r0 = int(math.floor((ymax - gt[3]) / gt[5] + 1e-9))
    r1 = int(math.ceil((ymin - gt[3]) / gt[5] - 1e-9))
    c0, r0 = max(0, c0), max(0, r0)
    c1, r1 = min(info.width, c1), min(info.height, r1)
    if c1 <= c0 or r1 <= r0:
        raise LandformError("The chosen extent does not overlap the DEM.")
    if (c0, r0, c1, r1) == (0, 0, info.width, info.height):
        return None
    path = os.path.join(run_dir, "extent.vrt")
    with _quiet_gdal():
        sub = gdal.Translate(path, info.path, format="VRT", srcWin=[c0, r0, c1 - c0, r1 - r0])
    if sub is None:
        raise LandformError(f"Could not cut the DEM to the extent: {gdal.GetLastErrorMsg()}")
    sub = None
    return path


def dem_sources(dems: Sequence[str]) -> List[str]:
    """DEM paths from the command line: files, VRTs, or text files listing one path per line."""
    out: List[str] = []
    for d in dems:
        if d.lower().endswith(".txt") and os.path.isfile(d):
            base = os.path.dirname(os.path.abspath(d))
            with open(d, "r", encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        out.append(line if os.path.isabs(line) else os.path.join(base, line))
        else:
            out.append(d)
    if not out:
        raise LandformError("No DEM was given.")
    return out


@dataclass
class ClassifyOptions:
    """How to classify, declared once: Processing's parameters and the command line's options
    are built from these fields (``core.schema``), so their defaults cannot disagree."""

    band: int = 1  # Processing: a band parameter of the DEM; command line: --band
    pixel_size_m: Optional[float] = option(
        None, "PIXEL_SIZE", "Processing resolution [m] (0 = the model's)", kind="float", minimum=0.0,
        maximum=100000.0, zero_means_none=True, flag="--pixel-size")
    tile_size: Optional[int] = option(
        None, "TILE_SIZE", f"Tile size [cells, a multiple of the network's output stride] (0 = {DEFAULT_TILE} "
        "or the model's own, if larger)", kind="int", minimum=0, maximum=8192, zero_means_none=True, advanced=True)
    overlap: float = option(DEFAULT_OVERLAP, "OVERLAP", "Tile overlap [fraction of the tile; 0 = abutting tiles, "
                            "each cell predicted once; > 0 = Hann-blended tiles]", minimum=0.0, maximum=0.75,
                            advanced=True)
    margin: Optional[int] = option(
        -1, "MARGIN", "Context margin around each tile [cells, a multiple of the output stride] "
        f"(-1 = {DEFAULT_MARGIN})", kind="int", minimum=-1, maximum=1024, advanced=True)
    batch_size: int = option(DEFAULT_BATCH, "BATCH_SIZE", "Batch size [tiles]", minimum=1, maximum=256, advanced=True)
    device: str = option("auto", "DEVICE", "Device", choices=tuple(DEVICE_CHOICES))
    extent: Optional[Sequence[float]] = None  # Processing: an extent parameter; scripts: (xmin, ymin, xmax, ymax)
    block_size: int = option(blocks_mod.DEFAULT_BLOCK_SIZE, "BLOCK_SIZE", "Block size [cells], the unit of work",
                             minimum=64, maximum=65536, advanced=True, cli=False)
    cog: bool = option(False, "COG", "Write Cloud Optimized GeoTIFFs (with overviews)", advanced=True, cli=False)
    confidence_byte: bool = option(
        False, "CONFIDENCE_BYTE", f"Confidence as Byte (0-{BYTE_STEPS} = probability 0-1, NoData {BYTE_NODATA}; "
        "a quarter of the size)", advanced=True, flag="--confidence-byte")
    steady: str = option(
        "off", "STEADY", "Steady maps: average over flipped and rotated copies of each tile (slower)",
        choices=tuple(VIEWS), choice_labels=("off: one pass", "4 flips: 4x the time", "8 flips and rotations: 8x the time"),
        advanced=True, help="flips: 4 passes; all: 8 (the map no longer depends on the DEM's orientation)")
    smoothing: float = option(
        DEFAULT_SMOOTHING, "SMOOTHING", "Smoothing of the class probabilities [Gaussian sigma, cells of the processing "
        "grid; 0 = off]", minimum=0.0, maximum=MAX_SMOOTHING, advanced=True, flag="--smoothing",
        help="low-passes the landform probabilities before the class is chosen: less speckle and fewer changes "
             "when the DEM is shifted, cropped or noisy, at some cost in detail (core.smoothing)")
    reuse_memory: bool = option(
        False, "REUSE_MEMORY", "Faster on the CPU, more memory: the network reuses freed memory between its layers "
        "(Linux)", advanced=True, flag="--reuse-memory",
        help="the CPU forward pass reuses freed heap memory instead of fresh pages (glibc only; 8192^2 DEM, "
             "FCN-ResNet18: 1.16-1.43x faster, peak memory 1.8 GB instead of 1.25-1.27 GB; same outputs)")


def build_job(dem: str, model_path: str, class_out: str, confidence_out: Optional[str], spec: dict,
              opt: ClassifyOptions, run_dir: str, fp: str) -> ClassifyJob:
    """Check the inputs and parameters and lay out the zones, tiles and blocks of a run."""
    from .nets.registry import output_stride

    _, info = open_raster(dem, opt.band)
    require_crs(info)
    if opt.extent is not None:
        sub = _subset_to_extent(info, opt.extent, run_dir)
        if sub is not None:
            dem = sub
            _, info = open_raster(dem, opt.band)
    ds, info = open_raster(dem, opt.band)
    require_some_data(ds, info)
    stride = output_stride(spec["architecture"])
    px = float(opt.pixel_size_m) if opt.pixel_size_m else float(spec["pixel_size_m"])
    if px <= 0:
        raise LandformError("The processing resolution must be a positive number of metres.")
    tile = int(opt.tile_size) if opt.tile_size else max(DEFAULT_TILE, int(spec["tile_size"]))
    if tile % stride:
        raise LandformError(f"Tile size must be a multiple of {stride} pixels for this network; {tile} is not.")
    margin = round_up(DEFAULT_MARGIN, stride) if opt.margin is None or int(opt.margin) < 0 else int(opt.margin)
    if int(opt.batch_size) < 1:
        raise LandformError("Batch size must be at least 1.")
    if opt.steady not in VIEWS:
        raise LandformError(f"Unknown 'steady' choice '{opt.steady}': choose one of {', '.join(VIEWS)}.")
    if not 0.0 <= float(opt.smoothing) <= MAX_SMOOTHING:
        raise LandformError(f"Smoothing must be between 0 and {MAX_SMOOTHING:g} cells; {opt.smoothing} is not.")
    if int(opt.block_size) < stride:
        raise LandformError(f"The block size must be at least {stride} cells.")
    zones = tuple(processing_zones(info, px))
    for z in zones:  # validates tile, overlap and margin
        plan_tiles(z.domain, tile, opt.overlap, stride, margin, 0)
    outputs = _output_specs(class_out, confidence_out, spec["classes"], bool(opt.confidence_byte))
    classes = tuple((int(c["code"]), tuple(int(v) for v in c["color"]), str(c["name"])) for c in spec["classes"])
    out = OutputGrid(info.width, info.height, tuple(info.geotransform), info.crs_wkt)
    return ClassifyJob(dem, opt.band, info, model_path, opt.device, classes, px, tile, float(opt.overlap), margin, stride,
                       int(opt.batch_size), int(opt.block_size), zones, out, outputs, run_dir, fp, bool(opt.cog),
                       VIEWS[opt.steady], reuse_memory=bool(opt.reuse_memory), smoothing=float(opt.smoothing))


def _output_specs(class_out: str, confidence_out: Optional[str], classes: list,
                  confidence_byte: bool = False) -> Tuple[blocks_mod.OutputSpec, ...]:
    table = tuple((int(c["code"]), tuple(int(v) for v in c["color"]), str(c["name"])) for c in classes)
    specs = [blocks_mod.OutputSpec("classes", class_out, gdal.GDT_Byte, ("Landform class",), 0, table)]
    if confidence_out:
        names = tuple(f"{c['name']} probability" for c in classes) + (TOP_BAND_NAME,)
        if confidence_byte:
            specs.append(blocks_mod.OutputSpec("confidence", confidence_out, gdal.GDT_Byte, names, BYTE_NODATA,
                                               overview_resampling="AVERAGE", scale=1.0 / BYTE_STEPS))
        else:
            specs.append(blocks_mod.OutputSpec("confidence", confidence_out, gdal.GDT_Float32, names,
                                               CONFIDENCE_NODATA, overview_resampling="AVERAGE"))
    return tuple(specs)


def classify_raster(
    dem_path,
    model_path: str,
    class_out: str,
    confidence_out: Optional[str] = None,
    band: int = 1,
    pixel_size_m: Optional[float] = None,
    tile_size: Optional[int] = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH,
    device: str = "auto",
    extent: Optional[Sequence[float]] = None,
    progress: Optional[Progress] = None,
    predictor: Optional[Predictor] = None,
    margin: Optional[int] = None,
    block_size: int = blocks_mod.DEFAULT_BLOCK_SIZE,
    engine=None,
    cog: bool = False,
    keep_run_on_error: bool = False,
    confidence_byte: bool = False,
    steady: str = "off",
    reuse_memory: bool = False,
    smoothing: Optional[float] = None,
) -> Dict[str, object]:
    """Classify ``dem_path`` (a path, or a list of DEM files to mosaic) with ``model_path``.

    ``engine``: None = every block in this process; else a ``blocks.DaskEngine``. See the module
    docstring. Returns a summary dict.
    """
    opt = ClassifyOptions(band, pixel_size_m, tile_size, overlap, margin, batch_size, device, extent, block_size, cog,
                          confidence_byte, steady, DEFAULT_SMOOTHING if smoothing is None else smoothing, reuse_memory)
    return classify(dem_path, model_path, class_out, confidence_out, opt, progress, predictor, engine, keep_run_on_error)


def classify(dem_path, model_path: str, class_out: str, confidence_out: Optional[str], opt: ClassifyOptions,
             progress: Optional[Progress] = None, predictor: Optional[Predictor] = None, engine=None,
             keep_run_on_error: bool = False) -> Dict[str, object]:
    """Classify with ``opt``; the run folder beside ``class_out`` holds the blocks until the outputs are assembled."""
    from .modelfile import read_spec

    progress = progress or Progress()
    t_start = time.perf_counter()
    spec = read_spec(model_path)
    dems = [dem_path] if isinstance(dem_path, str) else dem_sources(dem_path)
    outs = [class_out, confidence_out]
    for o in filter(None, outs):  # before any work: a folder that is a file, an output that is an input, ...
        check_output_path(o, dems + [model_path])
    if confidence_out and os.path.abspath(confidence_out) == os.path.abspath(class_out):
        raise LandformError("The class raster and the confidence raster must be two different files.")
    fp = blocks_mod.fingerprint(*dems, model_path, repr(sorted(vars(opt).items())), outs, "classify-1")
    run_dir = blocks_mod.run_folder_for(class_out)
    try:
        blocks_mod.RunFolder(run_dir, fp, progress)
        dem = dems[0] if len(dems) == 1 else mosaic_vrt(dems, os.path.join(run_dir, "mosaic.vrt"))
        job = build_job(dem, model_path, class_out, confidence_out, spec, opt, run_dir, fp)
        if engine is None or isinstance(engine, blocks_mod.InProcess):  # load the model before any block
            # block files only this process reads back: uncompressed when the disk has room
            job = replace(job, raw_blocks=blocks_mod.raw_blocks_fit(run_dir, job.block_bytes()))
            allocator.settle_allocator()  # before torch starts its threads, so they share the capped heaps
            if predictor is not None:
                _PREDICTORS.clear()
                _PREDICTORS[_predictor_key(model_path, opt.device)] = predictor
            cached_predictor(model_path, opt.device)
        with (engine or blocks_mod.InProcess()) as eng:
            _log_plan(job, progress, eng)
            stats = blocks_mod.run_job(job, eng, progress, keep_run_on_error)
    except BaseException:
        if not keep_run_on_error:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        release_worker_state()  # this process's handles on the DEM and the run folder
        if opt.reuse_memory:
            allocator.release_heap()
    return _summary(job, stats, time.perf_counter() - t_start)


def _log_plan(job: ClassifyJob, progress: Progress, engine) -> None:
    grids = [job.tile_grid(z) for z in range(len(job.zones))]
    g = grids[0]
    mode = f"overlap {job.overlap:g}, Hann blending" if g.blend else "abutting tiles (no overlap)"
    progress.info(
        f"Processing lattice at {job.pixel_size_m:g} m: {describe_zones(job.zones)}"
        + ("" if job.same_grid else "; resampled from the DEM") + ". "
        f"{sum(x.n_tiles for x in grids)} tile(s) of {g.size_x} x {g.size_y}, {mode}, context margin {job.margin}; "
        f"{sum(len(s) for s in job.stages())} block task(s) of about {job.block_size} cells on {engine.description}"
        + (f", written uncompressed until assembled ({job.block_bytes() / 1e9:.2f} GB in {job.run_dir})."
           if job.raw_blocks else ".")
    )
    sides = cut_sides(job.dem, job.band)
    if sides:
        progress.info(
            f"The DEM has elevations up to its {', '.join(sides)} edge(s): near a cut edge the map is less certain "
            "and can differ from a run on a larger DEM (a 10 km local mean and 1 km relief see only one side there; "
            "models/README.md gives the measured change by distance to the cut). If this DEM is one tile of a "
            "larger area, classify the tiles in one run (several DEM files or a VRT): a mosaic has no cut "
            "between its tiles."
        )


def cut_sides(dem: str, band: int = 1) -> List[str]:
    """The sides ("top", "bottom", "left", "right") along which the raster holds elevations on
    more than half of its edge cells: where the terrain was cut, not where it ends in NoData
    (a coast, an island of data). Reads the four edge lines only."""
    ds, info = open_raster(dem, band)
    b = ds.GetRasterBand(info.band)
    w, h = info.width, info.height
    lines = {"top": (0, 0, w, 1), "bottom": (0, h - 1, w, 1), "left": (0, 0, 1, h), "right": (w - 1, 0, 1, h)}
    out = []
    for side, (x0, y0, xs, ys) in lines.items():
        a = read_band(b, x0, y0, xs, ys, path=info.path).astype(np.float64)
        valid = np.isfinite(a)
        if info.nodata is not None and not math.isnan(info.nodata):
            valid &= a != info.nodata
        if valid.mean() > 0.5:
            out.append(side)
    return out


def _summary(job: ClassifyJob, stats: List[dict], wall: float) -> Dict[str, object]:
    counts = np.zeros(len(job.classes), np.int64)
    for s in stats:
        if "counts" in s:
            counts += np.asarray(s["counts"], np.int64)
    valid_n = int(counts[1:].sum())
    g = job.tile_grid(0)
    return {
        "class_raster": job.outputs[0].path,
        "confidence_raster": job.outputs[1].path if len(job.outputs) > 1 else None,
        "processing_size": (job.zones[0].width, job.zones[0].height),
        "zones": [z.name for z in job.zones],
        "pixel_size_m": job.pixel_size_m,
        "resampled": not job.same_grid,
        "tiles": sum(job.tile_grid(z).n_tiles for z in range(len(job.zones))),
        "tile_size": (g.size_x, g.size_y),
        "margin": job.margin,
        "blocks": sum(len(s) for s in job.stages()),
        "forward_pixels": int(sum(s.get("forward_pixels", 0) for s in stats)),
        "device": next((s["device"] for s in stats if "device" in s), job.device),
        "wall_s": wall,
        "forward_s": float(sum(s.get("forward_s", 0.0) for s in stats)),
        "block_seconds": float(sum(s.get("seconds", 0.0) for s in stats)),
        "read_s": float(sum(s.get("read_s", 0.0) for s in stats)),
        "write_s": float(sum(s.get("write_s", 0.0) for s in stats)),
        "assemble_s": job.assemble_s,
        "edge_pad": job.edge_pad,
        "class_counts": {c[2]: int(counts[i]) for i, c in enumerate(job.classes)},
        "class_shares": {c[2]: (float(counts[i]) / valid_n if valid_n else 0.0) for i, c in enumerate(job.classes) if i},
    }


# ----------------------------------------------------------------------------- command line


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "classify", help="classify landforms in a DEM (or a mosaic of DEM tiles) with a model file (needs torch)",
        description="Classify landforms. DEM: one or more rasters (files, a GDAL VRT, or .txt files listing "
        "one path per line) mosaicked into one; blocks run here, or on a Dask cluster with --scheduler / "
        "--local-workers. Finished blocks are kept when a run fails or is killed: the same command continues.",
    )
    p.add_argument("dem", nargs="+", help="DEM file(s), VRT or .txt list")
    p.add_argument("model")
    p.add_argument("class_out")
    p.add_argument("--confidence", default=None, help="confidence raster to write (per-class probabilities)")
    p.add_argument("--band", type=int, default=1)
    add_cli_options(p, ClassifyOptions)
    blocks_mod.add_engine_args(p)

    def run(args):
        opt = from_cli(ClassifyOptions, args, band=args.band, block_size=args.block_size, cog=args.cog)
        engine = blocks_mod.engine_from_args(args)
        dem = args.dem[0] if len(args.dem) == 1 and not args.dem[0].lower().endswith(".txt") else args.dem
        summary = classify(dem, args.model, args.class_out, args.confidence, opt, blocks_mod.ConsoleProgress(),
                           engine=None if isinstance(engine, blocks_mod.InProcess) else engine, keep_run_on_error=True)
        for k, v in summary.items():
            print(f"{k}: {v}")
        return 0

    p.set_defaults(func=run)
