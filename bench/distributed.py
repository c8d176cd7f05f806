"""Scale-out cost: one process against a local Dask cluster of 2 workers x 1 thread, same machine.

    .venv/bin/python bench/distributed.py [--size 16384] [--backbone resnet18] [--block-size 4096]

DEM: --size x --size cells at 30 m in UTM 11N, real relief (the Big Tujunga SRTM 30 m DEM and
mirrored copies of it, as bench/classify.py builds it), cut into 4096 x 4096 GeoTIFF tiles and
classified as a list of tiles (the mosaic path a national DEM takes).
Model: a random-weight FCN-ResNet (1 channel) saved with pixel size 30 m: random weights cost
exactly what trained ones do.

Both runs are the command line (``python -m landform_plugin.core classify``) in a child process:
(a) every block in that process (torch with all cores), (b) ``--local-workers 2`` (a local
cluster, workers of 1 thread). On one machine (b) cannot be faster; it measures what the block
decomposition and the scheduling cost (tiles recomputed at block borders when tiles are blended;
none with the default abutting tiles), the cluster's own
processes, the assembly. The process tree is sampled every 0.2 s (psutil): CPU seconds per
process (its own, last value seen; a process's reaped children are not added to it, they are
sampled themselves) and peak RSS per process.

Printed, one figure per line with its label in capitals:
  CPU RATIO CLUSTER / SINGLE      total CPU seconds (target <= 1.10)
  PEAK RSS PER WORKER             GB, the largest of the cluster's processes (target < 2 GB)
  WALL SINGLE / WALL CLUSTER      seconds
  CPU SECONDS PER MEGAPIXEL       single process
  COUNTRY COST                    CPU hours for 10^10 cells (China at 30 m) at that rate
"""
import argparse
import os
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))

from osgeo import gdal  # noqa: E402

COUNTRY_CELLS = 1e10  # China at 30 m: about 9.6e6 km^2 / (0.03 km)^2


class TreeSampler(threading.Thread):
    """CPU seconds and peak RSS of a process and all its descendants, sampled until stopped."""

    def __init__(self, pid: int, every_s: float = 0.2):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.every = every_s
        self.cpu = {}
        self.rss = {}
        self.names = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except self.psutil.Error:
                break
            for p in procs:
                try:
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system  # its own only: its children are sampled themselves
                    self.rss[p.pid] = max(self.rss.get(p.pid, 0), p.memory_info().rss)
                    self.names.setdefault(p.pid, " ".join(p.cmdline()[:4]))
                except self.psutil.Error:
                    pass
            self.stop.wait(self.every)


def run_cli(args, label):
    proc = subprocess.Popen([sys.executable, "-m", "landform_plugin.core", "classify", *args], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    t0 = time.perf_counter()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join(timeout=5)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{out[-3000:]}")
    return wall, sampler, out


def make_tiles(work: str, size: int):
    from classify import make_dem  # bench/classify.py

    whole = os.path.join(work, f"dem_{size}.tif")
    make_dem(whole, size)
    tiles = []
    step = 4096
    for y0 in range(0, size, step):
        for x0 in range(0, size, step):
            p = os.path.join(work, f"tile_{y0 // step}_{x0 // step}.tif")
            gdal.Translate(p, whole, srcWin=[x0, y0, min(step, size - x0), min(step, size - y0)],
                           creationOptions=["TILED=YES", "COMPRESS=ZSTD", "ZSTD_LEVEL=1"])
            tiles.append(p)
    os.remove(whole)
    listing = os.path.join(work, "tiles.txt")
    with open(listing, "w") as f:
        f.write("\n".join(tiles) + "\n")
    return listing, len(tiles)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--keep", default=None, help="folder to keep the DEM and outputs in (default: a temp folder)")
    args = ap.parse_args(argv)

    from classify import random_model, work_folder  # bench/classify.py

    with work_folder(args.keep, "bench_distributed_") as work:
        t0 = time.perf_counter()
        listing, n_tiles = make_tiles(work, args.size)
        print(f"DEM {args.size} x {args.size} at 30 m from real SRTM relief, {n_tiles} tiles, "
              f"built in {time.perf_counter() - t0:.0f} s; load before: {os.getloadavg()[0]:.2f}")
        model = random_model(os.path.join(work, "bench_model.safetensors"), args.backbone)
        common = [listing, model, "--device", "cpu", "--block-size", str(args.block_size)]
        w1, s1, out1 = run_cli(common + [os.path.join(work, "single.tif")], "single process")
        w2, s2, out2 = run_cli(common + [os.path.join(work, "cluster.tif"), "--local-workers", "2"], "local cluster")
        mp = args.size * args.size / 1e6
        cpu1, cpu2 = sum(s1.cpu.values()), sum(s2.cpu.values())
        workers = sorted((r for pid, r in s2.rss.items() if pid != s2.root.pid), reverse=True)[:2]
        print(f"single process: {w1:.0f} s wall, {cpu1:.0f} CPU s, peak RSS {max(s1.rss.values()) / 1e9:.2f} GB")
        print(f"local cluster (2 x 1 thread): {w2:.0f} s wall, {cpu2:.0f} CPU s over {len(s2.cpu)} processes, "
              f"client process peak RSS {s2.rss[s2.root.pid] / 1e9:.2f} GB")
        print(f"CPU RATIO CLUSTER / SINGLE: {cpu2 / cpu1:.3f}   (target <= 1.10)")
        print(f"PEAK RSS PER WORKER: {workers[0] / 1e9:.2f} GB   (target < 2 GB; second worker "
              f"{workers[1] / 1e9:.2f} GB)")
        print(f"WALL SINGLE / WALL CLUSTER: {w1:.0f} s / {w2:.0f} s")
        rate = cpu1 / mp
        print(f"CPU SECONDS PER MEGAPIXEL: {rate:.3f}   (FCN-{args.backbone}, 30 m, this machine's CPU)")
        print(f"COUNTRY COST: {rate * COUNTRY_CELLS / 1e6 / 3600:.0f} CPU hours for 1e10 cells at this rate")
        same = (gdal.Open(os.path.join(work, "single.tif")).ReadAsArray()
                == gdal.Open(os.path.join(work, "cluster.tif")).ReadAsArray()).mean()
        print(f"classes identical on {100 * same:.4f} % of cells; load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
