"""Benchmark: all seven terrain factors against gdaldem slope + aspect + hillshade.

    .venv/bin/python bench/terrain_factors.py [--size 8192] [--repeat 2]

Builds a >= 8000 x 8000 DEM from real data in a temporary folder: two
adjacent SRTM 3" tiles of the DEM collection in $LANDFORM_DEM_DATA (N36W121 + N36W120, San Joaquin
Valley and Diablo Range) mosaicked and warped with gdalwarp (cubic) to a
110 km square in UTM 11N at about 13.4 m, Float32, tiled ZSTD-1. If those
tiles are absent it resamples the bundled sample DEM (resources/sample).

Both sides write tiled 512 x 512 GeoTIFFs with ZSTD level 1 and
NUM_THREADS=2 (core.rasters.GTIFF_OPTIONS), use -compute_edges semantics and
GDAL's default block cache; both run as child processes, timed by wall clock,
peak RSS read with getrusage(RUSAGE_CHILDREN) in a small wrapper process per
run (CPU seconds user+sys too: less sensitive to other processes on a shared
machine than wall time). The factor run derives slope, aspect, hillshade, RDLS (1000 m window)
and the three curvatures (`python -m landform_plugin.core terrain`).
Prints each run, the ratio of the best times and the peak RSS.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEM_DATA = os.path.join(os.environ.get("LANDFORM_DEM_DATA", ""), "jaanga_terrain_plus_srtm3")
TILES = [os.path.join(DEM_DATA, f"N36W12{i}_srtm3_viewfinder.tif") for i in (1, 0)]
SAMPLE = os.path.join(REPO, "resources", "sample", "boulder_frontrange_srtmgl3.tif")
CO = ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512", "COMPRESS=ZSTD", "ZSTD_LEVEL=1", "NUM_THREADS=2", "BIGTIFF=IF_SAFER"]

# Runs argv[1:] and prints the child's wall time and peak RSS (kB) as JSON.
WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[1:])
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kb": ru.ru_maxrss}))
"""


def measure(cmds, env=None):
    """Run each command in one wrapper process per command; total wall and CPU seconds, max of peak RSS."""
    wall, cpu, rss = 0.0, 0.0, 0
    for cmd in cmds:
        out = subprocess.run([sys.executable, "-c", WRAPPER] + cmd, capture_output=True, text=True, env=env)
        last = out.stdout.strip().splitlines()[-1]
        res = json.loads(last)
        if res["rc"] != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
        wall += res["wall"]
        cpu += res["cpu"]
        rss = max(rss, res["maxrss_kb"])
    return wall, cpu, rss / 1024.0


def build_dem(tmp, size):
    dem = os.path.join(tmp, "dem.tif")
    if all(os.path.exists(t) for t in TILES):
        vrt = os.path.join(tmp, "mosaic.vrt")
        subprocess.run(["gdalbuildvrt", "-q", vrt] + TILES, check=True)
        # 110 km square centred on (120 W, 36.5 N) in UTM 11N.
        from osgeo import osr

        src, dst = osr.SpatialReference(), osr.SpatialReference()
        src.ImportFromEPSG(4326)
        dst.ImportFromEPSG(32611)
        for s in (src, dst):
            s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        x, y, _ = osr.CoordinateTransformation(src, dst).TransformPoint(-120.0, 36.5)
        half = 55_000.0
        te = [str(v) for v in (x - half, y - half, x + half, y + half)]
        origin = "SRTM 3\" N36W121+N36W120 (San Joaquin Valley / Diablo Range), UTM 11N"
        warp = ["-t_srs", "EPSG:32611", "-te"] + te
        source = vrt
    else:
        source, warp = SAMPLE, []
        origin = "resources/sample Boulder SRTM (resampled)"
    cmd = ["gdalwarp", "-q", "-overwrite", "-r", "cubic", "-ot", "Float32", "-dstnodata", "-9999", "-ts", str(size), str(size), "-multi", "-wo", "NUM_THREADS=2"]
    for c in CO:
        cmd += ["-co", c]
    subprocess.run(cmd + warp + [source, dem], check=True)
    return dem, origin


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_terrain_")
    try:
        t = time.perf_counter()
        dem, origin = build_dem(tmp, args.size)
        print(f"DEM: {args.size} x {args.size} Float32 from {origin} ({time.perf_counter() - t:.1f} s to build)")
        gd_out = os.path.join(tmp, "gdaldem")
        os.makedirs(gd_out)
        co = []
        for c in CO:
            co += ["-co", c]
        gdaldem = [
            ["gdaldem", "slope", dem, os.path.join(gd_out, "slope.tif"), "-compute_edges", "-q"] + co,
            ["gdaldem", "aspect", dem, os.path.join(gd_out, "aspect.tif"), "-compute_edges", "-q"] + co,
            ["gdaldem", "hillshade", dem, os.path.join(gd_out, "hillshade.tif"), "-compute_edges", "-q"] + co,
        ]
        ours_out = os.path.join(tmp, "ours")
        ours = [[sys.executable, "-m", "landform_plugin.core", "terrain", dem, ours_out, "--workers", str(args.workers)]]
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        g_times, o_times, g_cpu, o_cpu, g_rss, o_rss = [], [], [], [], 0.0, 0.0
        for i in range(args.repeat):
            w, c, r = measure(gdaldem, env)
            g_times.append(w)
            g_cpu.append(c)
            g_rss = max(g_rss, r)
            print(f"run {i + 1}: gdaldem slope+aspect+hillshade {w:6.2f} s wall {c:6.2f} s CPU  peak RSS {r:6.0f} MB", flush=True)
            shutil.rmtree(ours_out, ignore_errors=True)
            w, c, r = measure(ours, env)
            o_times.append(w)
            o_cpu.append(c)
            o_rss = max(o_rss, r)
            print(f"run {i + 1}: landform all 7 factors          {w:6.2f} s wall {c:6.2f} s CPU  peak RSS {r:6.0f} MB", flush=True)
        ratio = min(o_times) / min(g_times)
        sizes = {d: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 2**20 for d in (gd_out, ours_out)}
        print(f"best: gdaldem {min(g_times):.2f} s, all factors {min(o_times):.2f} s")
        print(f"RATIO all-factors / gdaldem-three = {ratio:.2f} (best wall times; target <= 1.5)")
        print(f"CPU ratio = {min(o_cpu) / min(g_cpu):.2f} (user+sys seconds, less sensitive to other load)")
        print(f"PEAK RSS factor run = {o_rss:.0f} MB (target < 1024 MB); gdaldem {g_rss:.0f} MB")
        print(f"output size: gdaldem 3 files {sizes[gd_out]:.0f} MB, factors 7 files {sizes[ours_out]:.0f} MB")
        print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()}")
    finally:
        if args.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
