"""Terrain factors and rule-based classes as block jobs, for a Dask cluster (``core.blocks``).

Both are computed block by block with a halo by the same kernels as the one-process algorithms
(``terrain.compute_factors_block``, ``rules.classify_block``), which give the same value for a cell
whatever block it falls in; here each block is one task that writes its own GeoTIFFs, and the outputs
are assembled by GDAL at the end. Window sizes that depend on the raster (the rules' windows in cells)
are fixed once for the whole run, before the blocks are sent out.
"""
import atexit
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
from osgeo import gdal

from . import blocks as blocks_mod
from . import labels, rules, terrain
from .errors import LandformError
from .outputs import check_output_path
from .progress import Progress
from .rasters import RasterInfo, Window, block_windows, cell_sizes_m, open_raster, read_window, require_crs, require_some_data

_OPEN: Dict[str, tuple] = {}  # per process: path -> (dataset, band)


def _release() -> None:
    _OPEN.clear()


atexit.register(_release)


def _band(path: str, band: int):
    key = f"{path}#{band}"
    if key not in _OPEN:
        ds = gdal.Open(path)
        if ds is None:
            raise LandformError(f"Cannot open '{path}' on this worker: {gdal.GetLastErrorMsg()}")
        _OPEN.clear()
        _OPEN[key] = (ds, ds.GetRasterBand(band))
    return _OPEN[key][1]


@dataclass(frozen=True)
class _RasterJob:
    dem: str
    band: int
    info: RasterInfo
    block: Tuple[int, int]  # (rows, cols)
    halo: int
    outputs: Tuple[blocks_mod.OutputSpec, ...]
    run_dir: str
    fingerprint: str
    cog: bool

    def windows(self) -> List[Window]:
        return block_windows(self.info.width, self.info.height, self.block[1], self.block[0], self.halo)

    def stages(self) -> List[List[blocks_mod.Task]]:
        return [[blocks_mod.Task(0, f"b_{w.x0}_{w.y0}", (w,)) for w in self.windows()]]

    def after_stage(self, tasks) -> None:
        return None

    def _read(self, win: Window) -> np.ndarray:
        arr = read_window(_band(self.dem, self.band), win, self.info.nodata)
        _OPEN[f"{self.dem}#{self.band}"][0].FlushCache()  # each window is read once: keep GDAL's cache small
        return arr

    def _write(self, key: str, win: Window, arrays: Mapping[str, np.ndarray]) -> None:
        gt = self.info.geotransform
        wgt = (gt[0] + win.x0 * gt[1], gt[1], 0.0, gt[3] + win.y0 * gt[5], 0.0, gt[5])
        for spec in self.outputs:
            blocks_mod.write_block(blocks_mod.block_path(self.run_dir, spec.key, key), arrays[spec.key], wgt,
                                   self.info.crs_wkt, spec)

    def assemble(self, progress: Progress) -> None:
        keys = [t.key for t in self.stages()[0]]
        files = {s.key: [blocks_mod.block_path(self.run_dir, s.key, k) for k in keys] for s in self.outputs}
        grid = (self.info.width, self.info.height, self.info.geotransform, self.info.crs_wkt)
        blocks_mod.assemble(self.outputs, files, grid, self.run_dir, self.cog, progress, inputs=[self.dem])


@dataclass(frozen=True)
class TerrainJob(_RasterJob):
    names: Tuple[str, ...] = ()
    params: Optional[terrain.FactorParams] = None

    def run_task(self, task: blocks_mod.Task, progress: Progress) -> dict:
        (win,) = task.args
        t0 = time.perf_counter()
        elev = self._read(win)
        dxr, dyr = cell_sizes_m(self.info, win.y0 - self.halo, win.height + 2 * self.halo)
        box = terrain.window_raster_box(win, self.info.width, self.info.height)
        res = terrain.compute_factors_block(elev, dxr, dyr, list(self.names), self.params, crop=self.halo, raster_box=box)
        self._write(task.key, win, {n: terrain._to_file_values(n, res[n], inplace=True) for n in self.names})
        return {"seconds": time.perf_counter() - t0}


@dataclass(frozen=True)
class RulesJob(_RasterJob):
    params: Optional[rules.RuleParams] = None
    windows_cells: Optional[rules.WindowCells] = None

    def run_task(self, task: blocks_mod.Task, progress: Progress) -> dict:
        (win,) = task.args
        t0 = time.perf_counter()
        dem = self._read(win)
        cls = rules.classify_block(dem, win, self.windows_cells, self.params)
        self._write(task.key, win, {"classes": cls})
        counts = np.bincount(cls.ravel(), minlength=8)[:8]
        return {"seconds": time.perf_counter() - t0, "counts": [int(c) for c in counts]}


def _open(dem: str, band: int) -> RasterInfo:
    ds, info = open_raster(dem, band)
    require_crs(info)
    require_some_data(ds, info)
    return info


def terrain_factors(dem: str, outputs: Mapping[str, str], engine, band: int = 1, params=None,
                    block_size: int = blocks_mod.DEFAULT_BLOCK_SIZE, cog: bool = False,
                    progress: Optional[Progress] = None, keep_run_on_error: bool = True) -> Dict[str, str]:
    """Terrain factors {name: path} of ``dem``, block by block on ``engine``."""
    progress = progress or Progress()
    names = tuple(n for n in terrain.FACTOR_NAMES if n in outputs)
    if not names:
        raise LandformError("Choose at least one terrain factor.")
    ds, info = open_raster(dem, band)
    p = terrain.check_raster(ds, info, names, terrain.FactorParams.from_any(params))
    halo = terrain.halo_pixels(names, p)
    specs = tuple(
        blocks_mod.OutputSpec(n, outputs[n], gdal.GDT_Byte if n == "hillshade" else gdal.GDT_Float32, (n,),
                              terrain.HILLSHADE_NODATA if n == "hillshade" else terrain.NODATA)
        for n in names
    )
    first = outputs[names[0]]
    fp = blocks_mod.fingerprint(dem, band, repr(p), names, [s.path for s in specs], block_size, cog, "terrain-1")
    rows = max(1, block_size // 4)  # terrain kernels run fastest on wide, short blocks
    job = TerrainJob(dem, band, info, (rows, block_size), halo, specs, blocks_mod.run_folder_for(first), fp, cog,
                     names, p)
    _run(job, engine, progress, keep_run_on_error)
    return {s.key: s.path for s in specs}


def rule_classes(dem: str, out: str, engine, band: int = 1, params: Optional[rules.RuleParams] = None,
                 block_size: int = blocks_mod.DEFAULT_BLOCK_SIZE, cog: bool = False,
                 progress: Optional[Progress] = None, keep_run_on_error: bool = True) -> Dict[str, float]:
    """Rule-based classes of ``dem`` into ``out``, block by block on ``engine``; returns class shares (%)."""
    progress = progress or Progress()
    params = params or rules.RuleParams()
    params.validate()
    info = _open(dem, band)
    wc = rules.window_cells(info, params)
    progress.info("Rule-based landforms: " + wc.describe())
    sy, sx = wc.coarse_step
    bs = (max(sy, block_size // sy * sy), max(sx, block_size // sx * sx))  # coarse grid whole in every block
    table = tuple((c.code, tuple(c.color), c.name) for c in params.classes)
    spec = blocks_mod.OutputSpec("classes", out, gdal.GDT_Byte, ("landform class (rules)",), labels.NODATA_CLASS, table)
    fp = blocks_mod.fingerprint(dem, band, repr(params), out, block_size, cog, "rules-1")
    job = RulesJob(dem, band, info, bs, wc.halo, (spec,), blocks_mod.run_folder_for(out), fp, cog, params, wc)
    stats = _run(job, engine, progress, keep_run_on_error)
    counts = np.sum([s["counts"] for s in stats], axis=0)
    valid = counts[1:].sum()
    return {c.name: (100.0 * counts[c.code] / valid if valid else 0.0) for c in params.classes if c.code}


def _run(job, engine, progress: Progress, keep_run_on_error: bool) -> List[dict]:
    for spec in job.outputs:  # before any work
        check_output_path(spec.path, [job.dem])
    n = len(job.stages()[0])
    try:
        with engine as eng:
            progress.info(f"{n} block task(s) on {eng.description}.")
            return blocks_mod.run_job(job, eng, progress, keep_run_on_error)
    finally:
        _release()


def engine_requested(args) -> bool:
    return bool(getattr(args, "scheduler", None) or getattr(args, "local_workers", 0))
