"""Tiled inference cost: end-to-end classify_raster against the network's forward passes alone.

    nice -n 10 .venv/bin/python bench/classify.py [--size 8192] [--backbone resnet18]
        [--pixel-size 30] [--tile 1024] [--overlap 0.25] [--batch 2] [--device auto]

DEM: a --size x --size GeoTIFF at 30 m in UTM 11N, mosaicked from the real
Big Tujunga SRTM 30 m DEM (tests/data/topotoolbox_dems) with alternate copies
mirrored so the terrain is continuous (real relief everywhere, no seams in the
data), written block by block into a temporary folder.
Model: a random-weight FCN-ResNet (--backbone, 1 channel, decoder 256) saved as
a model file with pixel_size_m 30, so by default the DEM is processed on its
own grid (no resampling). Random weights cost exactly what trained ones do.
With --pixel-size other than 30 the DEM is resampled to it and the results
warped back (the printout says so).

Printed:
- end-to-end wall time of classify_raster (reading, normalisation, forward,
  blending, writing the class + 6-band confidence GeoTIFFs);
- forward time: the sum of the model calls inside that run on exactly its tiles
  (Predictor.forward_s), and a separate forward-only loop over a sample of
  the same tile batches (random inputs of the same shape) as a cross-check;
- overhead ratio = end-to-end / forward (target <= 1.15 at 25 % overlap);
- megapixels per second of DEM; tiles and network input pixels vs DEM pixels;
- peak RSS of the process (target < 2.5 GB on CPU).

Measured 2026-11-27 (2 shared CPU cores, 4 people working: wall times move with
the others' load, so CPU seconds are the steadier figure), 8192^2 at 30 m, FCN-ResNet18,
tile 1024 + 32 margin, 25 % overlap, batch 2: 121 tiles, 143 MP network input for 67 MP.
  quiet run:  end-to-end 186 s, forward in run 167 s (ratio 1.11), CPU s 340 vs forward-only
              312 (1.09), 0.36 MP/s, peak RSS 2.44 GB
  loaded run: end-to-end 387 s, forward in run 359 s (1.08), CPU s 382 vs 317 (1.21),
              0.17 MP/s, peak RSS 2.37 GB
The wall ratio against the separate forward-only loop (0.84 and 1.99) only says how the
machine's load changed between the two parts.
"""
import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from osgeo import gdal  # noqa: E402

SOURCE = os.path.join(REPO, "tests", "data", "topotoolbox_dems", "bigtujunga_srtm30m_utm11.tif")


def make_dem(path: str, size: int) -> None:
    src = gdal.Open(SOURCE)
    a = src.GetRasterBand(1).ReadAsArray().astype(np.float32)
    h, w = a.shape
    variants = {(fy, fx): a[:: -1 if fy else 1, :: -1 if fx else 1] for fy in (0, 1) for fx in (0, 1)}
    drv = gdal.GetDriverByName("GTiff")
    ds = drv.Create(path, size, size, 1, gdal.GDT_Float32, ["TILED=YES", "COMPRESS=ZSTD", "ZSTD_LEVEL=1", "BIGTIFF=YES"])
    gt = src.GetGeoTransform()
    ds.SetGeoTransform(gt)
    ds.SetProjection(src.GetProjection())
    b = ds.GetRasterBand(1)
    b.SetNoDataValue(-9999.0)
    for y0 in range(0, size, h):
        rows = min(h, size - y0)
        strip = np.empty((rows, size), np.float32)
        for x0 in range(0, size, w):
            cols = min(w, size - x0)
            tile = variants[((y0 // h) % 2, (x0 // w) % 2)]
            strip[:, x0 : x0 + cols] = tile[:rows, :cols]
        b.WriteArray(strip, 0, y0)
    ds = None


@contextmanager
def work_folder(keep, prefix: str):
    """The benchmark's folder: ``keep`` (made if needed and left in place), or a temporary
    folder removed afterwards."""
    work = keep or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(work, exist_ok=True)
    try:
        yield work
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def random_model(path: str, backbone: str) -> str:
    """A random-weight FCN-ResNet (1 channel, dem) saved as a model file for 30 m: it costs exactly
    what a trained one does (seeded, so the same every run)."""
    import torch

    from landform_plugin.core.modelfile import make_spec, save_model
    from landform_plugin.core.nets.registry import build_model

    torch.manual_seed(0)
    spec = make_spec("fcn_resnet", backbone, ["dem"], 30.0, 512, training={"note": "random weights (benchmark)"})
    save_model(path, build_model("fcn_resnet", backbone, 1), spec)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--pixel-size", type=float, default=30.0)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--margin", type=int, default=None)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sample-batches", type=int, default=0,
                    help="batches in the forward-only reference (0 = as many as the run had: all its tiles)")
    ap.add_argument("--keep", default=None, help="folder to keep the DEM and outputs in (default: a temp folder)")
    args = ap.parse_args(argv)

    import torch

    from landform_plugin.core.nets.registry import count_parameters
    from landform_plugin.core.predict import Predictor, classify_raster

    with work_folder(args.keep, "bench_classify_") as work:
        dem = os.path.join(work, f"dem_{args.size}.tif")
        t0 = time.perf_counter()
        if not os.path.exists(dem):
            make_dem(dem, args.size)
        print(f"DEM {args.size} x {args.size} at 30 m (mosaic of real SRTM), built in {time.perf_counter() - t0:.1f} s")
        model_path = random_model(os.path.join(work, "bench_model.safetensors"), args.backbone)
        predictor = Predictor.from_file(model_path, args.device)
        print(
            f"model: random-weight FCN-{args.backbone} ({count_parameters(predictor.model) / 1e6:.1f} M parameters), "
            f"device {predictor.device}, torch threads {torch.get_num_threads()}"
        )
        if args.pixel_size != 30.0:
            print(f"NOTE: processed at {args.pixel_size:g} m, not the DEM's 30 m: resampled and warped back.")
        outs = (os.path.join(work, "classes.tif"), os.path.join(work, "confidence.tif"))
        c0 = time.process_time()
        t0 = time.perf_counter()
        s = classify_raster(
            dem, model_path, outs[0], outs[1], pixel_size_m=args.pixel_size, tile_size=args.tile, overlap=args.overlap,
            batch_size=args.batch, device=args.device, predictor=predictor, margin=args.margin,
        )
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        rss_run = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

        # forward-only reference: the same number of batches of the same shape, no I/O
        n_in = s["tile_size"][0] + 2 * s["margin"]
        n_all = (s["tiles"] + args.batch - 1) // args.batch
        n_batches = min(args.sample_batches, n_all) if args.sample_batches else n_all
        x = np.random.default_rng(0).normal(size=(args.batch, 1, n_in, n_in)).astype(np.float32)
        predictor.forward_s = 0.0
        c1 = time.process_time()
        for _ in range(n_batches):
            predictor.probabilities(x)
        fwd_cpu = (time.process_time() - c1) * n_all / n_batches
        fwd_wall = predictor.forward_s * n_all / n_batches
        per_tile_run = s["forward_s"] / s["tiles"]

        dem_mp = args.size * args.size / 1e6
        print(f"tiles: {s['tiles']} of {s['tile_size'][0]} + 2 x {s['margin']} margin, overlap {args.overlap:g}, "
              f"edge pad {s['edge_pad']}; network input {s['forward_pixels'] / 1e6:.0f} MP for "
              f"{s['processing_size'][0] * s['processing_size'][1] / 1e6:.0f} MP processed "
              f"({s['forward_pixels'] / (s['processing_size'][0] * s['processing_size'][1]):.2f}x)")
        print(f"end-to-end wall: {wall:.1f} s  (read+normalise {s['read_s']:.1f} s, write blocks {s['write_s']:.1f} s, "
              f"assemble outputs {s['assemble_s']:.1f} s; {s['blocks']} block(s))")
        print(f"forward passes inside the run: {s['forward_s']:.1f} s ({per_tile_run:.2f} s/tile; slowed by the "
              f"prefetch thread sharing the cores)")
        print(f"forward-only reference: {fwd_wall:.1f} s wall, {fwd_cpu:.1f} s CPU for the run's {n_all} batches "
              f"({n_batches} measured)")
        print(f"OVERHEAD RATIO end-to-end / forward-only, wall: {wall / fwd_wall:.3f}   (target <= 1.15)")
        print(f"overhead ratio end-to-end / forward-only, CPU seconds: {cpu:.1f} / {fwd_cpu:.1f} = {cpu / fwd_cpu:.3f}")
        print(f"overhead ratio end-to-end / forward inside the run: {wall / s['forward_s']:.3f}")
        print(f"throughput: {dem_mp / wall:.3f} MP/s of DEM ({dem_mp:.1f} MP)")
        print(f"peak RSS: {rss_run:.2f} GB   (target < 2.5 GB)")
        print(f"class shares: {s['class_shares']}")


if __name__ == "__main__":
    main()
