"""Blocks as the unit of work: in this process or on a Dask cluster, resumable, assembled by GDAL.

A *job* (classification, terrain factors, rule-based classes) cuts its work
into *tasks*, each of which computes one block of the output and writes it as
its own GeoTIFF in a *run folder* beside the output. Tasks receive paths and
parameters only (GDAL datasets and torch models cannot be pickled, and a
worker may be another machine); they open what they need inside the task and
cache it per process. A task is finished when its ``<key>.done.json`` marker
exists: the block files are renamed into place first, the marker last, so a
killed run leaves either a finished block or nothing usable. Running the same
command again reuses the finished blocks (a run killed at 70 % continues from
there); a different command (other inputs, parameters or block size) starts a
fresh run folder.

When every task is done, each output is assembled from its blocks with GDAL
(a VRT, then one translate into a tiled, compressed GeoTIFF, or a Cloud
Optimized GeoTIFF with overviews) and all outputs of the run are renamed into
place together: no output appears unless all of them are complete.

Engines
-------
``InProcess`` runs the tasks one after the other here (the default: a desktop
or a single machine), telling a job that has ``runs_next(task)`` which task
follows, so it can start reading that task's input while it finishes this one.
``DaskEngine`` submits them to a Dask distributed cluster: an existing
scheduler (``tcp://host:port``; start workers with the ordinary ``dask worker``
command where this package is importable) or a local cluster started in this
process. Dask, not this module, schedules, retries
tasks whose worker died, and balances the load.
"""
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from osgeo import gdal

from .allocator import settle_allocator, tune_worker
from .errors import Cancelled, LandformError, MissingDependency
from .outputs import OutputSet, write_failure
from .progress import Progress
from .rasters import GTIFF_OPTIONS, _quiet_gdal, gdal_cache_at_most

DEFAULT_BLOCK_SIZE = 4096  # processing cells per block side
COG_OPTIONS = ["COMPRESS=ZSTD", "LEVEL=1", "BLOCKSIZE=512", "BIGTIFF=IF_SAFER", "NUM_THREADS=2"]
BLOCK_TILE = 256  # cells per side of a block file's GeoTIFF tiles
BLOCK_OPTIONS = ["TILED=YES", f"BLOCKXSIZE={BLOCK_TILE}", f"BLOCKYSIZE={BLOCK_TILE}", "COMPRESS=ZSTD", "ZSTD_LEVEL=1",
                 "BIGTIFF=IF_SAFER"]
# Block files that only this process writes and reads back are left uncompressed when they fit in
# RAW_SHARE_OF_FREE of the free disk space: compressing them and decompressing them again for the
# assembly was a tenth of a run. Measured on an 8192^2 DEM, FCN-ResNet18, float32 confidence, one
# process: wall 65.1-65.3 -> 58.5-59.8 s, CPU 110-112 -> 101-103 s, assembly 3.4-4.2 -> 2.5-2.7 s,
# for 1.7 GB of temporary files (25 bytes per cell) instead of about 1.1 GB.
RAW_BLOCK_OPTIONS = [o for o in BLOCK_OPTIONS if not o.startswith(("COMPRESS", "ZSTD"))] + ["COMPRESS=NONE"]
RAW_SHARE_OF_FREE = 0.25
WAIT_POLL_S = 0.5  # how often the client looks for finished blocks and for a cancel
ASSEMBLY_CACHE_BYTES = 128 << 20  # GDAL block cache while outputs are assembled


@dataclass(frozen=True)
class OutputSpec:
    """One output raster of a job: where it goes and what its bands are."""

    key: str
    path: str
    data_type: int
    band_names: Tuple[str, ...]
    nodata: Optional[float]
    color_table: Optional[Tuple[Tuple[int, Tuple[int, int, int], str], ...]] = None
    overview_resampling: str = "NEAREST"
    scale: Optional[float] = None  # value = stored * scale (GDAL band scale, offset 0), shown unscaled by QGIS

    @property
    def bands(self) -> int:
        return len(self.band_names)


@dataclass(frozen=True)
class Task:
    """One block of work. ``stage``: tasks of a stage start when the earlier stages are done."""

    stage: int
    key: str
    args: tuple = field(default_factory=tuple)


def fingerprint(*parts) -> str:
    """A stable hash of a job's inputs (path, size, modification time) and parameters."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str) and os.path.isfile(p):
            st = os.stat(p)
            p = (os.path.abspath(p), st.st_size, int(st.st_mtime))
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


class RunFolder:
    """The folder a run writes its blocks to; reused when the same job runs again."""

    def __init__(self, path: str, job_fingerprint: str, progress: Progress):
        self.path = path
        meta = os.path.join(path, "run.json")
        old = _read_json(meta)
        if old is not None and old.get("fingerprint") != job_fingerprint:
            progress.info(f"The run folder {path} belongs to another command; starting afresh.")
            shutil.rmtree(path, ignore_errors=True)
            old = None
        os.makedirs(path, exist_ok=True)
        if old is None:
            _write_json(meta, {"fingerprint": job_fingerprint, "created": time.time()})

    def done(self, key: str) -> Optional[dict]:
        return _read_json(os.path.join(self.path, f"{key}.done.json"))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, data) -> None:
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def execute(job, task: Task, progress: Optional[Progress] = None) -> dict:
    """Run one task and record it as done (on whichever machine runs it)."""
    settle_allocator()
    stats = job.run_task(task, progress or Progress())
    _write_json(os.path.join(job.run_dir, f"{task.key}.done.json"), stats)
    return stats


def execute_on_worker(job, task: Task) -> dict:
    """``execute`` on a Dask worker, whose allocator Dask's nanny set up for small objects."""
    tune_worker()
    return execute(job, task)


# ----------------------------------------------------------------------------- engines


class InProcess:
    """Every task here, one after the other, with progress inside each task."""

    description = "this process"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, job, tasks: Sequence[Task], progress: Progress, on_done: Callable[[Task, dict], None]) -> None:
        n = len(tasks)
        runs_next = getattr(job, "runs_next", None)  # a job that reads ahead learns what comes next
        for i, task in enumerate(tasks):
            progress.check()
            if runs_next is not None:
                runs_next(tasks[i + 1] if i + 1 < n else None)
            on_done(task, execute(job, task, progress.sub(100.0 * i / n, 100.0 * (i + 1) / n)))


class DaskEngine:
    """Tasks on a Dask distributed cluster: an existing scheduler, or a local one started here."""

    def __init__(self, scheduler: Optional[str] = None, local_workers: int = 0, threads_per_worker: int = 1,
                 connect_timeout_s: float = 30.0):
        self.scheduler = scheduler
        self.local_workers = int(local_workers or 0)
        self.threads = max(1, int(threads_per_worker))
        self.timeout = connect_timeout_s
        self.client = self.cluster = None

    def __enter__(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise MissingDependency(
                "Running blocks on a Dask cluster needs the 'dask' and 'distributed' packages "
                "(python -m pip install dask distributed)."
            ) from exc
        try:
            if self.scheduler:
                self.client = Client(self.scheduler, timeout=self.timeout)
            else:
                self.cluster = LocalCluster(
                    n_workers=self.local_workers, threads_per_worker=self.threads, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=40,
                )
                self.client = Client(self.cluster, timeout=self.timeout)
        except (OSError, TimeoutError) as exc:
            self.__exit__(None, None, None)
            raise LandformError(f"Could not reach the Dask scheduler {self.scheduler or '(local)'}: {exc}") from exc
        return self

    @property
    def description(self) -> str:
        import importlib.util

        n = len(self.client.scheduler_info(n_workers=-1).get("workers", {})) if self.client else 0
        link = getattr(self.client, "dashboard_link", "") or ""
        if self.cluster is not None and importlib.util.find_spec("bokeh") is None:
            link = "needs 'pip install bokeh'"
        return f"Dask cluster {self.client.scheduler.address} ({n} workers; dashboard {link or 'not available'})"

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close(timeout=self.timeout)
        if self.cluster is not None:
            self.cluster.close(timeout=self.timeout)
        self.client = self.cluster = None
        return False

    def run(self, job, tasks: Sequence[Task], progress: Progress, on_done: Callable[[Task, dict], None]) -> None:
        futures = {
            self.client.submit(execute_on_worker, job, t, key=f"landform-{job.fingerprint}-{t.key}", pure=False, retries=0): t
            for t in tasks
        }
        pending = set(futures)
        try:
            while pending:
                progress.check()
                done = [f for f in pending if f.done()]
                if not done:
                    time.sleep(WAIT_POLL_S)
                    continue
                for f in done:
                    pending.discard(f)
                    if f.status != "finished":
                        raise LandformError(f"Block {futures[f].key} failed: {_error_text(f)}")
                    on_done(futures[f], f.result())
        except BaseException:
            self.client.cancel(list(pending))
            raise


def _error_text(future) -> str:
    try:
        exc = future.exception(timeout=10)
    except Exception as err:  # the future was cancelled or the cluster went away
        return str(err) or type(err).__name__
    return f"{type(exc).__name__}: {exc}" if exc is not None else future.status


def make_engine(scheduler: Optional[str] = None, local_workers: int = 0, threads_per_worker: int = 1):
    if scheduler or local_workers:
        return DaskEngine(scheduler, local_workers, threads_per_worker)
    return InProcess()


# ----------------------------------------------------------------------------- running a job


def run_job(job, engine, progress: Optional[Progress] = None, keep_run_on_error: bool = False) -> List[dict]:
    """Run every task of ``job`` (skipping finished ones), then assemble its outputs.

    Returns the stats of every task. On an error or a cancel the run folder is
    removed unless ``keep_run_on_error`` (the command line keeps it, so the same
    command resumes); no final output is written either way.
    """
    progress = progress or Progress()
    run = RunFolder(job.run_dir, job.fingerprint, progress)
    stats: Dict[str, dict] = {}
    try:
        stages = job.stages()
        total = sum(len(s) for s in stages) or 1
        counter = [0]

        def on_done(task, st):
            stats[task.key] = st
            counter[0] += 1
            progress.update(95.0 * counter[0] / total)

        for stage_tasks in stages:
            todo = []
            for t in stage_tasks:
                old = run.done(t.key)
                if old is None:
                    todo.append(t)
                else:
                    on_done(t, old)
            if len(todo) < len(stage_tasks):
                progress.info(f"Reusing {len(stage_tasks) - len(todo)} finished block(s) from {run.path}.")
            base = 95.0 * counter[0] / total
            engine.run(job, todo, progress.sub(base, base + 95.0 * len(todo) / total), on_done)
            job.after_stage(stage_tasks)
        progress.check()
        job.assemble(progress.sub(95, 100))
    except BaseException as exc:
        if not keep_run_on_error or isinstance(exc, Cancelled):
            run.remove()
        elif os.path.isdir(run.path):
            progress.info(f"Finished blocks are kept in {run.path}: run the same command again to continue.")
        raise
    run.remove()
    return list(stats.values())


def run_folder_for(output_path: str) -> str:
    """The run folder of an output: hidden, beside it (so a cluster's shared disk holds it too)."""
    folder, name = os.path.split(os.path.abspath(output_path))
    return os.path.join(folder, f".{name}.landform-run")


# ----------------------------------------------------------------------------- block files and assembly


def block_path(run_dir: str, output_key: str, task_key: str) -> str:
    return os.path.join(run_dir, output_key, f"{task_key}.tif")


class BlockFile:
    """One block of one output as a small tiled GeoTIFF, written in strips of rows and renamed
    into place when complete (``with BlockFile(...) as f: f.write(rows, y0)``)."""

    def __init__(self, path: str, width: int, height: int, bands: int, geotransform, crs_wkt: str, spec: OutputSpec,
                 compress: bool = True):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.spec = path, spec
        self.tmp = f"{path}.{uuid.uuid4().hex[:8]}.partial.tif"
        opts = (BLOCK_OPTIONS if compress else RAW_BLOCK_OPTIONS) + (["INTERLEAVE=BAND"] if bands > 1 else [])
        gdal.ErrorReset()
        self.ds = gdal.GetDriverByName("GTiff").Create(self.tmp, width, height, bands, spec.data_type, opts)
        if self.ds is None:
            raise LandformError(f"Cannot write block file '{self.tmp}' (disk full or folder not writable?): "
                                f"{gdal.GetLastErrorMsg()}")
        self.ds.SetGeoTransform(list(geotransform))
        if crs_wkt:
            self.ds.SetProjection(crs_wkt)
        for i in range(bands):
            if spec.nodata is not None:
                self.ds.GetRasterBand(i + 1).SetNoDataValue(float(spec.nodata))
        if spec.color_table:
            self.ds.GetRasterBand(1).SetRasterColorTable(_color_table(spec.color_table))

    def write(self, array, y0: int = 0, x0: int = 0) -> None:
        """Bands (bands, h, w) or one band (h, w) at column ``x0``, row ``y0`` of the block."""
        import numpy as np

        arr = array if array.ndim == 3 else array[None]
        for i in range(arr.shape[0]):
            self.ds.GetRasterBand(i + 1).WriteArray(np.ascontiguousarray(arr[i]), int(x0), int(y0))

    def flush(self) -> None:
        """Write what GDAL's block cache holds of this file and drop it from the cache (whose
        default size, 5 % of the RAM, a block's confidence bands would otherwise fill)."""
        self.ds.FlushCache()

    def __enter__(self) -> "BlockFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.ds.FlushCache()
            failed = gdal.GetLastErrorType() >= gdal.CE_Failure
            err = gdal.GetLastErrorMsg()
        self.ds = None
        if exc_type is None and not failed:
            os.replace(self.tmp, self.path)
            return False
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
        if exc_type is None:
            raise LandformError(f"Writing block file '{self.path}' failed (disk full?): {err}")
        return False


def write_block(path: str, array, geotransform, crs_wkt: str, spec: OutputSpec) -> None:
    """A whole block array (bands, h, w) or (h, w) as one block file."""
    arr = array if array.ndim == 3 else array[None]
    with BlockFile(path, arr.shape[2], arr.shape[1], arr.shape[0], geotransform, crs_wkt, spec) as f:
        f.write(arr)


def raw_blocks_fit(run_dir: str, nbytes: int) -> bool:
    """Whether ``nbytes`` of uncompressed block files fit in RAW_SHARE_OF_FREE of the free space
    on the run folder's disk."""
    folder = os.path.abspath(run_dir)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return nbytes <= RAW_SHARE_OF_FREE * shutil.disk_usage(folder).free
    except OSError:
        return False


def _color_table(entries) -> gdal.ColorTable:
    ct = gdal.ColorTable()
    for code, rgb, _ in entries:
        ct.SetColorEntry(int(code), (int(rgb[0]), int(rgb[1]), int(rgb[2]), 255))
    return ct


def assemble(outputs: Sequence[OutputSpec], blocks: Dict[str, List[str]], grid, run_dir: str,
             cog: bool, progress: Progress, inputs: Sequence[str] = ()) -> None:
    """Each output from its block files (VRT + translate), then all renamed into place together."""
    with OutputSet(inputs) as out, gdal_cache_at_most(ASSEMBLY_CACHE_BYTES):
        for i, spec in enumerate(outputs):
            progress.check()
            _assemble_one(spec, blocks[spec.key], grid, run_dir, cog, out.file(spec.path))
            progress.update(100.0 * (i + 1) / len(outputs))


def _block_vrt(spec: OutputSpec, files: List[str], grid, run_dir: str):
    """A VRT over the block files with the output's grid, band names, NoData and colour table."""
    width, height, gt, crs = grid
    bounds = (gt[0], gt[3] + gt[5] * height, gt[0] + gt[1] * width, gt[3])
    # Blocks do not overlap, so nothing needs compositing: plain sources (srcNodata "None") are copied
    # as they are, where sources with NoData would be merged cell by cell. Assembling the float32
    # confidence of an 8192^2 run from 9 blocks: 4.9-5.9 s -> 2.9-3.1 s, the same values.
    with _quiet_gdal():
        vrt = gdal.BuildVRT(os.path.join(run_dir, f"{spec.key}.vrt"), list(files), outputBounds=bounds,
                            xRes=abs(gt[1]), yRes=abs(gt[5]), srcNodata="None")
    if vrt is None:
        raise LandformError(f"Could not assemble '{spec.path}' from its blocks: {gdal.GetLastErrorMsg()}")
    for i, name in enumerate(spec.band_names):
        b = vrt.GetRasterBand(i + 1)
        b.SetDescription(name)
        if spec.nodata is not None:
            b.SetNoDataValue(float(spec.nodata))
        if spec.scale is not None:
            b.SetScale(float(spec.scale))
            b.SetOffset(0.0)
    if spec.color_table:
        names = [""] * (max(c for c, _, _ in spec.color_table) + 1)
        for code, _, name in spec.color_table:
            names[int(code)] = name
        b1 = vrt.GetRasterBand(1)
        b1.SetRasterColorTable(_color_table(spec.color_table))
        b1.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        b1.SetCategoryNames(names)
    vrt.FlushCache()
    return vrt


def _assemble_one(spec: OutputSpec, files: List[str], grid, run_dir: str, cog: bool, tmp: str) -> None:
    vrt = _block_vrt(spec, files, grid, run_dir)
    if cog:
        kw = dict(format="COG", creationOptions=COG_OPTIONS + [f"OVERVIEW_RESAMPLING={spec.overview_resampling}"])
    else:
        kw = dict(format="GTiff", creationOptions=GTIFF_OPTIONS + (["INTERLEAVE=BAND"] if spec.bands > 1 else []))
    gdal.ErrorReset()
    with _quiet_gdal():
        out = gdal.Translate(tmp, vrt, **kw)
        ok = out is not None
        if ok:
            out.FlushCache()
            ok = gdal.GetLastErrorType() < gdal.CE_Failure
    out = vrt = None
    if not ok:
        raise write_failure(spec.path, gdal.GetLastErrorMsg() or "GDAL could not write it")


# ----------------------------------------------------------------------------- command line


def add_engine_args(p) -> None:
    """--scheduler / --local-workers / --block-size / --cog, shared by classify, terrain and rules."""
    g = p.add_argument_group("scale-out (Dask distributed)")
    g.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the blocks on this running Dask scheduler (start workers with 'dask worker ADDRESS')")
    g.add_argument("--local-workers", type=int, default=0, metavar="N",
                   help="start a local Dask cluster of N worker processes on this machine for the run")
    g.add_argument("--threads-per-worker", type=int, default=1, help="threads of each local worker (default 1)")
    g.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                   help=f"block side in processing cells, the unit of work (default {DEFAULT_BLOCK_SIZE})")
    g.add_argument("--cog", action="store_true", help="write Cloud Optimized GeoTIFFs (with overviews)")


def engine_from_args(args):
    if args.scheduler and args.local_workers:
        raise LandformError("Give either --scheduler or --local-workers, not both.")
    return make_engine(args.scheduler, args.local_workers, args.threads_per_worker)


class ConsoleProgress(Progress):
    """A progress bar on the terminal (one line per 5 % when not a terminal), and messages."""

    def __init__(self, stream=None):
        import sys

        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = -1
        super().__init__(set_progress=self._bar, log=self._say)

    def _bar(self, percent: float) -> None:
        step = int(percent) if self.tty else int(percent) // 5 * 5
        if step == self.last:
            return
        self.last = step
        bar = "#" * (step // 4) + "." * (25 - step // 4)
        if self.tty:
            self.stream.write(f"\r[{bar}] {step:3d} %")
            if step >= 100:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{bar}] {step:3d} %\n")
        self.stream.flush()

    def _say(self, message: str) -> None:
        if self.tty and 0 <= self.last < 100:
            self.stream.write("\n")
        print(message, flush=True)
