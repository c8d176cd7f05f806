"""Classify a DEM with a model file: tiled, blended, memory-bounded inference.

Pipeline (``classify_raster``)
------------------------------
1. Output grid = the DEM's own grid (or the part of it an extent selects,
   snapped outward to whole DEM cells).
2. Processing grid = the model's ground pixel size (or the one asked for) in
   metres. A projected DEM whose cells already have that size is used as is;
   otherwise it is warped with GDAL (same CRS if projected; a transverse
   Mercator centred on the DEM for geographic CRSs, so EPSG:4326 inputs are
   handled without distortion; "average" resampling when coarsening by more
   than 1.5x, else bilinear) to a temporary GeoTIFF.
3. Tiles (``tiling.plan_tiles``): stride-aligned, overlapping, blended with an
   edge-aware Hann window; each tile is predicted with ``margin`` cells of
   extra context around it (cropped from its output; default one output
   stride, see MARGIN_STRIDES); each tile-row is read as one strip with the
   halo the input factors and their normalisation need (``inputs.halo_pixels``),
   so a cell's input never depends on the tile. Tiles run in batches
   (``model.eval()``, ``torch.inference_mode``, autocast bf16/fp16 on CUDA).
4. Finished rows of blended softmax probabilities leave the rolling strip
   buffer immediately: written straight to the outputs when the processing
   grid is the output grid, else to a temporary probability raster that is
   warped back (bilinear) onto the DEM grid and turned into classes there.
   Peak memory: one strip (tile height x raster width x classes), whatever
   the raster height.
5. Outputs: class raster (Byte, NoData 0, colour table and category names)
   and confidence raster (Float32, NoData -1; one band per class with its
   softmax probability, named after the class, plus "Top-class confidence",
   the probability of the class written to the class raster). DEM NoData ->
   class 0 and NoData confidence. Classes are the argmax over the landform
   classes (code >= 1) for every valid DEM cell: "no data" is never
   predicted where there is elevation.

Writers write under temporary names and rename on success; a failure or a
cancel deletes them (``rasters.GeoTiffWriter``), so no output looks complete.
"""
import contextlib
import math
import os
import shutil
import tempfile
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, osr

from . import inputs as inputs_mod
from .errors import LandformError
from .progress import Progress
from .rasters import (
    GeoTiffWriter,
    RasterInfo,
    Window,
    _quiet_gdal,
    linear_unit_metres,
    open_raster,
    read_window,
    require_crs,
    require_some_data,
)
from .tiling import Blender, TilePlan, column_groups, plan_tiles

CONFIDENCE_NODATA = -1.0
TOP_BAND_NAME = "Top-class confidence"
TEMP_OPTIONS = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=NONE", "BIGTIFF=YES", "INTERLEAVE=BAND"]
EDGE_PAD_STRIDES = 2  # tiles start 2 output strides (64 cells for ResNets) outside the raster: see tiling
# Context read around every tile and cropped from its prediction (one output stride, 32 cells):
# with 25 % overlap and no margin, cells where two tiles' blend weights cross are only 1/8 of a
# tile from either tile's border; measured on the tiny test model (boulder, 60 m, tile 512), the
# probability difference to a whole-raster pass was 2.3x higher there than elsewhere; with a
# 32-cell margin it is lower there than elsewhere, for ~28 % more network input.
MARGIN_STRIDES = 1
# Default tile: the paper's 1024 x 1024 crops; at 25 % overlap the blend crossover is 128 cells
# from a tile's border. ResNet-50, 2 tiles of 1088^2 on CPU: ~1.4 GB peak RSS.
DEFAULT_TILE = 1024
SAME_GRID_TOLERANCE = 0.01  # relative difference in cell size under which the DEM grid is used as is


# ----------------------------------------------------------------------------- device / model


def resolve_device(device: str = "auto"):
    from .errors import import_torch

    torch = import_torch()
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise LandformError("Device 'cuda' was requested but PyTorch sees no CUDA GPU here; choose 'auto' or 'cpu'.")
        return torch.device("cuda")
    if device == "cpu":
        return torch.device("cpu")
    raise LandformError(f"Unknown device '{device}'; choose auto, cpu or cuda.")


class Predictor:
    """A loaded model on a device: ``probabilities(batch)`` -> softmax float32 numpy."""

    def __init__(self, model, spec: dict, device):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.spec = spec
        self.device = device
        self.cuda = device.type == "cuda"
        self.dtype = None
        if self.cuda:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_s = 0.0
        self.forward_pixels = 0

    @classmethod
    def from_file(cls, model_path: str, device: str = "auto") -> "Predictor":
        from .modelfile import load_model

        dev = resolve_device(device)
        model, spec = load_model(model_path, device=dev)
        return cls(model, spec, dev)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        t0 = time.perf_counter()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=self.dtype):
                    logits = self.model(x)
            else:
                logits = self.model(x)
            probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        self.forward_s += time.perf_counter() - t0
        self.forward_pixels += batch.shape[0] * batch.shape[2] * batch.shape[3]
        return probs


# ----------------------------------------------------------------------------- grids


def _subset_to_extent(ds, info: RasterInfo, extent, workdir: str) -> Tuple[object, RasterInfo, Tuple[int, int]]:
    """The DEM cells covering ``extent`` (xmin, ymin, xmax, ymax in the DEM's CRS), as a VRT."""
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
        return ds, info, (0, 0)
    path = os.path.join(workdir, "extent.vrt")
    sub = gdal.Translate(path, ds, format="VRT", srcWin=[c0, r0, c1 - c0, r1 - r0])
    if sub is None:
        raise LandformError(f"Could not cut the DEM to the extent: {gdal.GetLastErrorMsg()}")
    sub = None
    sds, sinfo = open_raster(path, info.band)
    return sds, sinfo, (c0, r0)


def _metric_crs_for(info: RasterInfo, ds) -> str:
    """A transverse Mercator centred on a geographic DEM (metres, low distortion over it)."""
    gt = info.geotransform
    cx = gt[0] + gt[1] * info.width / 2.0
    cy = gt[3] + gt[5] * info.height / 2.0
    src = osr.SpatialReference()
    src.ImportFromWkt(info.crs_wkt)
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geo = src.CloneGeogCS()
    geo.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lon, lat = osr.CoordinateTransformation(src, geo).TransformPoint(cx, cy)[:2]
    dst = osr.SpatialReference()
    dst.CopyGeogCSFrom(geo)
    dst.SetTM(0.0, float(lon), 1.0, 0.0, 0.0)
    dst.SetProjCS(f"Transverse Mercator centred on {lon:.4f} (landform processing grid)")
    return dst.ExportToWkt()


def processing_grid(ds, info: RasterInfo, pixel_size_m: float, workdir: str, progress: Progress):
    """(dataset, info, same_grid) of the DEM on the processing grid."""
    unit = linear_unit_metres(info)
    if not info.is_geographic:
        rx, ry = info.pixel_width * unit, info.pixel_height * unit
        if abs(rx - pixel_size_m) <= SAME_GRID_TOLERANCE * pixel_size_m and abs(ry - pixel_size_m) <= SAME_GRID_TOLERANCE * pixel_size_m:
            return ds, info, True
        dst_wkt, res = info.crs_wkt, pixel_size_m / unit
        src_m = math.sqrt(rx * ry)
    else:
        from .rasters import mean_cell_size_m

        dst_wkt, res = _metric_crs_for(info, ds), pixel_size_m
        src_m = mean_cell_size_m(info)
    alg = "average" if pixel_size_m > 1.5 * src_m else "bilinear"
    progress.info(
        f"Resampling the DEM from ~{src_m:.1f} m to {pixel_size_m:g} m cells ({alg}) for the model"
        + (" in a transverse Mercator projection centred on it." if info.is_geographic else ".")
    )
    path = os.path.join(workdir, "processing_dem.tif")
    src_nodata = info.nodata if info.nodata is not None else None
    with _quiet_gdal():
        src = gdal.Translate(os.path.join(workdir, "band.vrt"), ds, format="VRT", bandList=[info.band])
        if src is None:
            raise LandformError(f"Could not read band {info.band} of the DEM: {gdal.GetLastErrorMsg()}")
        out = gdal.Warp(
            path,
            src,
            format="GTiff",
            dstSRS=dst_wkt,
            xRes=res,
            yRes=res,
            targetAlignedPixels=True,  # rounds the bounds outward: the grid covers every DEM cell
            resampleAlg=alg,
            outputType=gdal.GDT_Float32,
            srcNodata=src_nodata,
            dstNodata=float("nan"),
            creationOptions=TEMP_OPTIONS,
            multithread=True,
            warpOptions=["NUM_THREADS=2"],
        )
    if out is None:
        raise LandformError(f"Could not resample the DEM to {pixel_size_m:g} m: {gdal.GetLastErrorMsg()}")
    out = src = None
    pds, pinfo = open_raster(path, 1)
    return pds, pinfo, False


# ----------------------------------------------------------------------------- reading inputs


class InputReader:
    """Reads the network input for a strip of tiles, exactly (halo included)."""

    def __init__(self, ds, info: RasterInfo, spec: dict, pixel_size_m: float):
        # its own GDAL handle: strips are read in a prefetch thread while the main thread writes
        own = gdal.Open(info.path, gdal.GA_ReadOnly)
        self._ds = own if own is not None else ds
        self.band = self._ds.GetRasterBand(info.band)
        self.info = info
        self.factors = list(spec["input_factors"])
        self.normalisation = spec["normalisation"]
        self.pixel_size_m = float(pixel_size_m)
        self.halo = inputs_mod.halo_pixels(self.factors, self.normalisation, self.pixel_size_m)
        self.read_s = 0.0

    def strip(self, plan: TilePlan, row: int, cols: Sequence[int], margin: int = 0) -> np.ndarray:
        """Inputs (C, tile_h + 2 margin, span + 2 margin) for tiles ``cols`` of tile-row ``row``.

        ``margin`` cells of real context are read around the tiles (the network sees them,
        their predictions are discarded); where the context leaves the raster the input is
        mirrored (``numpy.pad(mode="reflect")``).
        """
        t0 = time.perf_counter()
        m = int(margin)
        x0 = plan.xs[cols[0]] - m
        x1 = plan.xs[cols[-1]] + plan.tile_w + m
        y0 = plan.ys[row] - m
        y1 = plan.ys[row] + plan.tile_h + m
        rx0, ry0 = max(0, x0), max(0, y0)
        rx1, ry1 = min(x1, plan.width), min(y1, plan.height)
        win = Window(rx0, ry0, rx1 - rx0, ry1 - ry0, self.halo)
        elev = read_window(self.band, win, self.info.nodata)
        self._ds.FlushCache()  # keep GDAL's block cache (up to 5 % of RAM) from holding the whole strip history
        px = np.full(elev.shape[0], self.pixel_size_m)
        box = None
        if any(f != "dem" for f in self.factors):
            from .terrain import window_raster_box

            box = window_raster_box(win, self.info.width, self.info.height)
        chans, _valid = inputs_mod.make_input(
            elev, self.halo, self.factors, self.normalisation, self.pixel_size_m, px, px, raster_box=box
        )
        pads = ((0, 0), (ry0 - y0, y1 - ry1), (rx0 - x0, x1 - rx1))
        if any(p for pair in pads for p in pair):
            chans = _reflect_pad(chans, pads)
        self.read_s += time.perf_counter() - t0
        return chans


def _reflect_pad(a: np.ndarray, pads) -> np.ndarray:
    """Mirror padding that also works when the pad is wider than the array (repeated mirroring)."""
    for axis in (1, 2):
        before, after = pads[axis]
        if not (before or after):
            continue
        width = [(0, 0)] * a.ndim
        width[axis] = (before, after)
        mode = "reflect" if a.shape[axis] > 1 else "edge"
        a = np.pad(a, width, mode=mode)
    return a


# ----------------------------------------------------------------------------- tiled prediction


def predict_tiles(
    predictor: Predictor, reader: InputReader, plan: TilePlan, batch_size: int, sink, progress: Progress, margin: int = 0
):
    """Predict every tile (with ``margin`` cells of context), blend, and call ``sink(y0, probs)`` in row order.

    The next strip of inputs is read and normalised in a background thread while
    the network runs on the current one (GDAL reads and most numpy work release
    the GIL; on a GPU this hides the input preparation entirely).
    """
    from concurrent.futures import ThreadPoolExecutor

    n_cls = len(predictor.spec["classes"])
    blender = Blender(plan, n_cls)
    done = 0
    m = int(margin)
    tw = plan.tile_w + 2 * m
    groups = list(column_groups(plan))
    jobs = [(row, cols, k == len(groups) - 1) for row in range(len(plan.ys)) for k, cols in enumerate(groups)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="landform-read") as pool:
        future = pool.submit(reader.strip, plan, jobs[0][0], jobs[0][1], m)
        for j, (row, cols, row_done) in enumerate(jobs):
            progress.check()
            strip = future.result()
            if j + 1 < len(jobs):
                future = pool.submit(reader.strip, plan, jobs[j + 1][0], jobs[j + 1][1], m)
            base = plan.xs[cols[0]]
            tiles = plan.row_tiles(row)
            for b in range(0, len(cols), batch_size):
                progress.check()
                chunk = [tiles[c] for c in cols[b : b + batch_size]]
                batch = np.stack([strip[:, :, t.x0 - base : t.x0 - base + tw] for t in chunk])
                probs = predictor.probabilities(batch)
                if m:
                    probs = probs[:, :, m : m + plan.tile_h, m : m + plan.tile_w]
                for t, p in zip(chunk, probs):
                    blender.add(t, p)
                done += len(chunk)
                progress.update(100.0 * done / plan.n_tiles)
            del strip
            if row_done:
                y0, probs = blender.finish_row(row)
                if probs is not None:
                    sink(y0, probs)


def finalise(probs: np.ndarray, valid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(classes uint8 (h,w), confidence float32 (C+1,h,w)) from probabilities and the DEM's valid mask."""
    ok = valid & np.isfinite(probs).all(axis=0)
    safe = np.where(np.isfinite(probs), probs, 0.0)
    cls = (np.argmax(safe[1:], axis=0) + 1).astype(np.uint8)
    top = np.take_along_axis(safe, cls[None].astype(np.intp), axis=0)[0]
    cls[~ok] = 0
    conf = np.concatenate([safe, top[None]], axis=0).astype(np.float32)
    conf[:, ~ok] = CONFIDENCE_NODATA
    return cls, conf


class _BlockRowWriter:
    """Writes finished rows to the outputs in whole rows of GeoTIFF blocks, then drops them from
    GDAL's cache: compressed blocks are written once (no rewrite, no file growth) and peak memory
    stays at about one strip plus one block row, whatever the raster size."""

    def __init__(self, cw: GeoTiffWriter, conf_w: Optional[GeoTiffWriter], block_rows: int = 512):
        self.cw, self.conf_w, self.block = cw, conf_w, int(block_rows)
        self.y0 = 0
        self.cls: list = []
        self.conf: list = []

    def add(self, y0: int, cls: np.ndarray, conf: np.ndarray) -> None:
        if y0 != self.y0 + sum(c.shape[0] for c in self.cls):
            raise ValueError("rows must arrive in order")
        self.cls.append(cls)
        if self.conf_w is not None:
            self.conf.append(conf)
        n = sum(c.shape[0] for c in self.cls)
        if n >= self.block:
            self._write(n // self.block * self.block)

    def close(self) -> None:
        n = sum(c.shape[0] for c in self.cls)
        if n:
            self._write(n)

    def _write(self, n: int) -> None:
        cls = np.concatenate(self.cls, axis=0)
        conf = np.concatenate(self.conf, axis=1) if self.conf_w is not None else None
        self.cw.write(cls[:n], 0, self.y0)
        self.cw.ds.FlushCache()
        if self.conf_w is not None:
            self.conf_w.write(conf[:, :n], 0, self.y0)
            self.conf_w.ds.FlushCache()
        self.y0 += n
        self.cls = [cls[n:]] if n < cls.shape[0] else []
        self.conf = [conf[:, n:]] if (conf is not None and n < cls.shape[0]) else []


def _valid_rows(band, nodata, y0: int, rows: int, width: int) -> np.ndarray:
    arr = read_window(band, Window(0, y0, width, rows, 0), nodata)
    return np.isfinite(arr)


def _output_writers(class_out: str, confidence_out: Optional[str], like: RasterInfo, classes: list):
    ct = [(int(c["code"]), tuple(c["color"]), str(c["name"])) for c in classes]
    cw = GeoTiffWriter(class_out, like, 1, gdal.GDT_Byte, nodata=0, band_names=["Landform class"], color_table=ct)
    conf_w = None
    if confidence_out:
        names = [f"{c['name']} probability" for c in classes] + [TOP_BAND_NAME]
        try:
            conf_w = GeoTiffWriter(confidence_out, like, len(names), gdal.GDT_Float32, nodata=CONFIDENCE_NODATA, band_names=names)
        except Exception:
            cw.discard()
            raise
    return cw, conf_w


def classify_raster(
    dem_path: str,
    model_path: str,
    class_out: str,
    confidence_out: Optional[str] = None,
    band: int = 1,
    pixel_size_m: Optional[float] = None,
    tile_size: Optional[int] = None,
    overlap: float = 0.25,
    batch_size: int = 2,
    device: str = "auto",
    extent: Optional[Sequence[float]] = None,
    progress: Optional[Progress] = None,
    predictor: Optional[Predictor] = None,
    margin: Optional[int] = None,
    edge_pad: Optional[int] = None,
) -> Dict[str, object]:
    """Classify ``dem_path`` with ``model_path``; see the module docstring. Returns a summary dict."""
    from .nets.registry import output_stride

    progress = progress or Progress()
    t_start = time.perf_counter()
    ds, info = open_raster(dem_path, band)
    require_crs(info)
    require_some_data(ds, info)
    if predictor is None:
        predictor = Predictor.from_file(model_path, device)
    spec = predictor.spec
    stride = output_stride(spec["architecture"])
    px = float(pixel_size_m) if pixel_size_m else float(spec["pixel_size_m"])
    if px <= 0:
        raise LandformError("The processing resolution must be a positive number of metres.")
    tile = int(tile_size) if tile_size else max(DEFAULT_TILE, int(spec["tile_size"]))
    if tile % stride:
        raise LandformError(f"Tile size must be a multiple of {stride} pixels for this network; {tile} is not.")
    if batch_size < 1:
        raise LandformError("Batch size must be at least 1.")
    workdir = tempfile.mkdtemp(prefix=".landform_", dir=os.path.dirname(os.path.abspath(class_out)))
    try:
        if extent is not None:
            ds, info, _ = _subset_to_extent(ds, info, extent, workdir)
            require_some_data(ds, info)
        pds, pinfo, same = processing_grid(ds, info, px, workdir, progress.sub(0, 5))
        edge = EDGE_PAD_STRIDES * stride if edge_pad is None else int(edge_pad)
        plan = plan_tiles(pinfo.width, pinfo.height, tile, overlap, stride, pad=edge)
        m = MARGIN_STRIDES * stride if margin is None else int(margin)
        if m % stride or m < 0:
            raise LandformError(f"The context margin must be a non-negative multiple of {stride} cells.")
        reader = InputReader(pds, pinfo, spec, px)
        progress.info(
            f"{pinfo.width} x {pinfo.height} cells at {px:g} m; {plan.n_tiles} tile(s) of {plan.tile_w} x {plan.tile_h}, "
            f"step {plan.step_x} x {plan.step_y}, context margin {m}; input halo {reader.halo} cells; "
            f"device {predictor.device}."
        )
        pband = pds.GetRasterBand(pinfo.band)
        classes = spec["classes"]
        n_cls = len(classes)
        write_s = [0.0]
        counts = np.zeros(n_cls, dtype=np.int64)
        if same:
            cw, conf_w = _output_writers(class_out, confidence_out, info, classes)
            # Both writers commit together on success and are discarded on any error or cancel.
            with cw, (conf_w or contextlib.nullcontext()):
                rows_out = _BlockRowWriter(cw, conf_w)

                def sink(y0, probs):
                    t0 = time.perf_counter()
                    valid = _valid_rows(pband, pinfo.nodata, y0, probs.shape[1], pinfo.width)
                    pds.FlushCache()
                    cls, conf = finalise(probs, valid)
                    counts[:] += np.bincount(cls.ravel(), minlength=n_cls)[:n_cls]
                    rows_out.add(y0, cls, conf if conf_w is not None else None)
                    write_s[0] += time.perf_counter() - t0

                predict_tiles(predictor, reader, plan, batch_size, sink, progress.sub(5, 100), m)
                rows_out.close()
        else:
            prob_path = os.path.join(workdir, "probabilities.tif")
            drv = gdal.GetDriverByName("GTiff")
            pdst = drv.Create(prob_path, pinfo.width, pinfo.height, n_cls, gdal.GDT_Float32, TEMP_OPTIONS)
            pdst.SetGeoTransform(pinfo.geotransform)
            pdst.SetProjection(pinfo.crs_wkt)
            for i in range(n_cls):
                pdst.GetRasterBand(i + 1).SetNoDataValue(float("nan"))

            def sink(y0, probs):
                t0 = time.perf_counter()
                valid = _valid_rows(pband, pinfo.nodata, y0, probs.shape[1], pinfo.width)
                probs = np.where(valid[None], probs, np.float32(np.nan))
                for i in range(n_cls):
                    pdst.GetRasterBand(i + 1).WriteArray(probs[i], 0, y0)
                pdst.FlushCache()  # uncompressed temp file: blocks are rewritten in place
                pds.FlushCache()
                write_s[0] += time.perf_counter() - t0

            predict_tiles(predictor, reader, plan, batch_size, sink, progress.sub(5, 90), m)
            # Cells of the DEM's edge whose processing cell centre fell just outside it are NaN
            # on the processing grid; extend the probabilities a few cells outward so the
            # bilinear warp back reaches every valid DEM cell (DEM NoData is masked again later).
            for i in range(n_cls):
                progress.check()
                gdal.FillNodata(pdst.GetRasterBand(i + 1), None, maxSearchDist=4, smoothingIterations=0)
            pdst.FlushCache()
            pdst = None
            _warp_back(prob_path, info, ds, workdir, class_out, confidence_out, classes, counts, progress.sub(90, 100))
        progress.update(100)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - t_start
    valid_n = int(counts[1:].sum())
    return {
        "class_raster": class_out,
        "confidence_raster": confidence_out,
        "processing_size": (pinfo.width, pinfo.height),
        "pixel_size_m": px,
        "resampled": not same,
        "tiles": plan.n_tiles,
        "tile_size": (plan.tile_w, plan.tile_h),
        "margin": m,
        "edge_pad": edge,
        "forward_pixels": predictor.forward_pixels,
        "device": str(predictor.device),
        "wall_s": wall,
        "forward_s": predictor.forward_s,
        "read_s": reader.read_s,
        "write_s": write_s[0],
        "class_counts": {str(c["name"]): int(counts[i]) for i, c in enumerate(classes)},
        "class_shares": {str(c["name"]): (float(counts[i]) / valid_n if valid_n else 0.0) for i, c in enumerate(classes) if i},
    }


def _warp_back(prob_path, info, ds, workdir, class_out, confidence_out, classes, counts, progress):
    """Bilinear warp of the probabilities onto the DEM grid, then classes/confidence block by block."""
    gt = info.geotransform
    bounds = (gt[0], gt[3] + gt[5] * info.height, gt[0] + gt[1] * info.width, gt[3])
    vrt_path = os.path.join(workdir, "probabilities_on_dem.vrt")
    with _quiet_gdal():
        v = gdal.Warp(
            vrt_path,
            prob_path,
            format="VRT",
            dstSRS=info.crs_wkt,
            outputBounds=bounds,
            width=info.width,
            height=info.height,
            resampleAlg="bilinear",
            srcNodata=float("nan"),
            dstNodata=float("nan"),
            outputType=gdal.GDT_Float32,
        )
    if v is None:
        raise LandformError(f"Could not bring the results back onto the DEM grid: {gdal.GetLastErrorMsg()}")
    v = None
    vds = gdal.Open(vrt_path)
    n_cls = len(classes)
    dem_band = ds.GetRasterBand(info.band)
    cw, conf_w = _output_writers(class_out, confidence_out, info, classes)
    rows = 512  # one row of output blocks (rasters.GTIFF_OPTIONS): each block written once
    with cw, (conf_w or contextlib.nullcontext()):
        for y0 in range(0, info.height, rows):
            progress.check()
            h = min(rows, info.height - y0)
            probs = np.stack(
                [vds.GetRasterBand(i + 1).ReadAsArray(0, y0, info.width, h).astype(np.float32) for i in range(n_cls)]
            )
            valid = _valid_rows(dem_band, info.nodata, y0, h, info.width)
            cls, conf = finalise(probs, valid)
            counts[:] += np.bincount(cls.ravel(), minlength=n_cls)[:n_cls]
            cw.write(cls, 0, y0)
            cw.ds.FlushCache()
            if conf_w is not None:
                conf_w.write(conf, 0, y0)
                conf_w.ds.FlushCache()
            vds.FlushCache()
            ds.FlushCache()
            progress.update(100.0 * (y0 + h) / info.height)


# ----------------------------------------------------------------------------- command line


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("classify", help="classify landforms in a DEM with a model file (needs torch)")
    p.add_argument("dem")
    p.add_argument("model")
    p.add_argument("class_out")
    p.add_argument("--confidence", default=None, help="confidence raster to write (per-class probabilities)")
    p.add_argument("--band", type=int, default=1)
    p.add_argument("--pixel-size", type=float, default=None, help="processing resolution in metres (default: the model's)")
    p.add_argument("--tile-size", type=int, default=None)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

    def run(args):
        summary = classify_raster(
            args.dem, args.model, args.class_out, args.confidence, args.band, args.pixel_size,
            args.tile_size, args.overlap, args.batch_size, args.device, progress=Progress(log=print),
        )
        for k, v in summary.items():
            print(f"{k}: {v}")
        return 0

    p.set_defaults(func=run)
