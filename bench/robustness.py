"""Robustness of the landform maps to DEM changes that should not change the landforms.

    nice -n 5 .venv/bin/python bench/robustness.py [--model models/default_model.safetensors ...]
        [--dems boulder,zion] [--threads 1] [--work FOLDER]

For every DEM in tools/train_default_model.HOLDOUT_DEMS (never used in training) the DEM is put
on its 90 m processing lattice (train_default_model.lattice_dem, as for training and in
bench/accuracy.py) and classified, clean, by each model (core.predict) and by the rules
(core.rules): the "base" maps. Each perturbed copy below is written as a GeoTIFF on the same
grid (float32, NaN NoData), classified the same way, and every classifier is compared with its
OWN base map: the figure is the share of cells whose class changed, over the cells valid
(class > 0) in both maps. The perturbations come from core.perturb, the definitions the
training recipe draws from, with fixed seeds:

- noise: white Gaussian noise of sigma 1, 3 and 10 m (SRTM's error is ~3-6 m, ~10 m on steep slopes);
- correlated: a smooth error field of 10 m standard deviation and 1 km correlation length (radar DEM error);
- voids: 5 % of the cells made NoData in round blobs of 0.5-2 km; compared outside the voids,
  and separately within 1 km of a void and beyond;
- shift: the data moved by one cell in x and in y on the same geotransform, shifted back after classifying;
- flips: horizontal flip, vertical flip and a 90 degree rotation on the same origin and cell
  size, undone after classifying (each, and the largest of the three);
- crop: the left and the right half classified each on its own, compared with the base map on
  the same cells, by distance from the cut (0-1, 1-3, 3-10, > 10 km; both halves pooled);
- resolution (only DEMs with a source finer than 35 m: RESOLUTION_DEMS): the source as given
  against a 90 m average of it on a grid offset by 30 m from the lattice (gdal.Warp), each
  classified as a user would (the model on the file itself, the rules on its lattice_dem);
  every map is brought onto the source's lattice by nearest neighbour, so the figure includes
  the third-of-a-cell offset of the 90 m grid.

On the clean DEMs also: agreement of each model with the rules (pooled PA, MIoU and per-class
IoU over the four landform classes, over the cells where the rules' class > 0, exactly as
bench/accuracy.py) and fragmentation (bench/accuracy.patches_per_km2) of every map.

"Pooled" counts the cells of all DEMs together; a second block gives the range (min-max) over
the DEMs. Targets (for each model):
  noise 3 m <= 1 % (moonshot 0.5 %); noise 10 m <= 8 % (moonshot 3 %); correlated 10 m <= 8 %;
  one-cell shift, each flip and the rotation <= 1 %; crop 0-1 km <= the rules' own change there;
  crop > 3 km (3-10 km and > 10 km pooled) <= 0.5 %; agreement with the rules PA >= 88 %,
  MIoU >= 72 %.
"""
import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.join(REPO, "bench"))

import numpy as np  # noqa: E402
from osgeo import gdal, osr  # noqa: E402
from scipy import ndimage  # noqa: E402

from landform_plugin.core import labels, metrics, perturb, rasters, rules  # noqa: E402
from accuracy import write_json  # noqa: E402

# Sources finer than 35 m in neither TRAIN_DEMS nor HOLDOUT_DEMS, plus the held-out 30 m one.
RESOLUTION_DEMS = {
    "gredos": "qgis_training_data/spain_gredos_dem25m_ed50utm30.tif",  # 25 m
    "tunez": "topopy_geolovic/tunisia_tunez_28m_utm32.tif",  # 28 m
    "bigtujunga": "topotoolbox_dems/bigtujunga_srtm30m_utm11.tif",  # 30 m, held out
}
SEED = 2024
CELL_M = 90.0
GRID_OFFSET_M = 30.0  # the 90 m copy's origin is this far from a lattice line in x and y
NOISE_M = (1.0, 3.0, 10.0)
CORRELATED_M, CORRELATION_M = 10.0, 1000.0
VOID_SHARE, VOID_DIAMETER_M, VOID_NEAR_M = 0.05, (500.0, 2000.0), 1000.0
CROP_BINS = {"crop 0-1 km": (0, 1000), "crop 1-3 km": (1000, 3000), "crop 3-10 km": (3000, 10000),
             "crop > 10 km": (10000, np.inf), "crop > 3 km": (3000, np.inf)}
FLIPS = {  # name -> (transform, its inverse)
    "flip horizontal": (np.fliplr, np.fliplr),
    "flip vertical": (np.flipud, np.flipud),
    "rotation 90": (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
}
FLIPS_MAX = "flips/rotation max"
CHANGE_TESTS = ([f"noise {s:g} m" for s in NOISE_M] + ["correlated 10 m / 1 km", "voids (outside)",
                "voids: within 1 km", "voids: beyond 1 km", "shift 1 cell"] + list(FLIPS)
                + [FLIPS_MAX] + list(CROP_BINS) + ["resolution 25-30 m vs 90 m"])
CLASSES = [c for c in labels.DEFAULT_CLASSES if c.code != labels.NODATA_CLASS]


def changed(base: np.ndarray, res: np.ndarray, keep=None) -> tuple:
    """(cells whose class differs, cells compared): cells valid in both maps (and in ``keep``)."""
    valid = (base > 0) & (res > 0)
    if keep is not None:
        valid &= keep
    return int(np.count_nonzero(base[valid] != res[valid])), int(np.count_nonzero(valid))


def write_dem(path: str, z: np.ndarray, gt, wkt: str) -> str:
    """A perturbed DEM as the classifiers read it: float32 GeoTIFF, NaN NoData, the given grid."""
    h, w = z.shape
    ds = gdal.GetDriverByName("GTiff").Create(path, w, h, 1, gdal.GDT_Float32, options=rasters.GTIFF_OPTIONS)
    ds.SetGeoTransform(list(gt))
    ds.SetProjection(wkt)
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(float("nan"))
    band.WriteArray(z.astype(np.float32, copy=False))
    ds = None
    return path


class Classifiers:
    """Every model (label -> (model file, classification options such as ``steady`` and
    ``smoothing``)) and the rules on one DEM file; maps are read back as arrays."""

    def __init__(self, models: dict, work: str):
        from landform_plugin.core import predict

        self.predict, self.models, self.work = predict, models, work
        self.predictors = {label: predict.Predictor.from_file(path, "cpu") for label, (path, _) in models.items()}
        self.seconds = {label: 0.0 for label in self.labels}

    @property
    def labels(self) -> list:
        return list(self.models) + ["rules"]

    def paths(self, dem: str, tag: str, model_dem=None) -> dict:
        """Class map paths per classifier; the models read ``model_dem`` when given (default ``dem``)."""
        out = {}
        for label, (model, options) in self.models.items():
            out[label] = os.path.join(self.work, f"{tag}_{label}.tif")
            t0 = time.perf_counter()
            self.predict.classify_raster(model_dem or dem, model, out[label], None, device="cpu",
                                         predictor=self.predictors[label], **options)
            self.seconds[label] += time.perf_counter() - t0
        out["rules"] = os.path.join(self.work, f"{tag}_rules.tif")
        t0 = time.perf_counter()
        rules.classify_raster(dem, out["rules"])
        self.seconds["rules"] += time.perf_counter() - t0
        return out

    def arrays(self, dem: str, tag: str) -> dict:
        return {k: rasters.read_array(p).astype(np.int64) for k, p in self.paths(dem, tag).items()}


def held_out_tests(name: str, index: int, dem90: str, clf: Classifiers, record) -> dict:
    """All perturbation tests on one lattice DEM; ``record(test, label, (changed, compared))``.
    Returns the base maps."""
    _, info = rasters.open_raster(dem90)
    z = rasters.read_array(dem90).astype(np.float32)  # lattice_dem writes NaN for NoData
    gt, wkt, px = info.geotransform, info.crs_wkt, info.pixel_width
    h, w = z.shape
    work = clf.work

    def run(tag, arr, geo=gt):
        return clf.arrays(write_dem(os.path.join(work, f"{name}_{tag}.tif"), arr, geo, wkt), f"{name}_{tag}")

    def rng(k):
        return np.random.default_rng([SEED, index, k])

    base = clf.arrays(dem90, f"{name}_base")
    for k, sigma in enumerate(NOISE_M):
        res = run(f"noise{sigma:g}", perturb.gaussian_noise(z, sigma, rng(k)))
        for label in clf.labels:
            record(f"noise {sigma:g} m", label, changed(base[label], res[label]))
    res = run("correlated", perturb.correlated_noise(z, CORRELATED_M, CORRELATION_M, px, rng(3)))
    for label in clf.labels:
        record("correlated 10 m / 1 km", label, changed(base[label], res[label]))

    zv = perturb.with_voids(z, VOID_SHARE, VOID_DIAMETER_M, px, rng(4))
    voids = np.isnan(zv) & ~np.isnan(z)
    near = ndimage.distance_transform_edt(~voids) * px <= VOID_NEAR_M
    res = run("voids", zv)
    for label in clf.labels:
        record("voids (outside)", label, changed(base[label], res[label], ~voids))
        record("voids: within 1 km", label, changed(base[label], res[label], near & ~voids))
        record("voids: beyond 1 km", label, changed(base[label], res[label], ~near))

    shifted = np.full_like(z, np.nan)
    shifted[:-1, :-1] = z[1:, 1:]
    res = run("shift", shifted)
    for label in clf.labels:
        record("shift 1 cell", label, changed(base[label][1:, 1:], res[label][:-1, :-1]))

    for k, (flip, (forward, back)) in enumerate(FLIPS.items()):
        res = run(f"flip{k}", np.ascontiguousarray(forward(z)))  # rot90: same origin and cell, w and h swapped
        for label in clf.labels:
            record(flip, label, changed(base[label], back(res[label])))

    cut = w // 2
    left = run("left", np.ascontiguousarray(z[:, :cut]))
    right = run("right", np.ascontiguousarray(z[:, cut:]), (gt[0] + cut * gt[1],) + tuple(gt[1:]))
    dist = np.broadcast_to(np.abs(np.arange(w) - cut) * px, (h, w))
    for label in clf.labels:
        halves = np.hstack([left[label], right[label]])
        for test, (lo, hi) in CROP_BINS.items():
            record(test, label, changed(base[label], halves, (dist >= lo) & (dist < hi)))
    return base


def offset_copy(src: str, dst: str) -> str:
    """A 90 m average of ``src`` in its own CRS on a grid GRID_OFFSET_M off the lattice lines."""
    ds, info = rasters.open_raster(src)
    if abs(rasters.linear_unit_metres(info) - 1.0) > 1e-9:
        raise ValueError(f"{src}: the resolution test expects a CRS in metres")
    gt = info.geotransform
    x0, y1 = gt[0], gt[3]
    x1, y0 = x0 + info.width * gt[1], y1 + info.height * gt[5]
    o = GRID_OFFSET_M
    bounds = (np.ceil((x0 - o) / CELL_M) * CELL_M + o, np.ceil((y0 - o) / CELL_M) * CELL_M + o,
              np.floor((x1 - o) / CELL_M) * CELL_M + o, np.floor((y1 - o) / CELL_M) * CELL_M + o)
    out = gdal.Warp(dst, ds, xRes=CELL_M, yRes=CELL_M, outputBounds=bounds, resampleAlg="average",
                    outputType=gdal.GDT_Float32, dstNodata=float("nan"), creationOptions=rasters.GTIFF_OPTIONS)
    if out is None:
        raise RuntimeError(f"could not write {dst}: {gdal.GetLastErrorMsg()}")
    out = None
    return dst


def on_lattice(path: str, lattice: rasters.RasterInfo) -> np.ndarray:
    """The class map at ``path`` on the ``lattice`` grid: nearest neighbour, class 0 outside. Maps of
    different inputs do not share a grid (the model writes on its input's grid); the warped result is
    checked to be exactly the lattice grid."""
    _, info = rasters.open_raster(path)
    a, b = osr.SpatialReference(wkt=info.crs_wkt), osr.SpatialReference(wkt=lattice.crs_wkt)
    if not a.IsSame(b):
        raise ValueError(f"{path} is not in the CRS of its lattice")
    gt = lattice.geotransform
    bounds = (gt[0], gt[3] + lattice.height * gt[5], gt[0] + lattice.width * gt[1], gt[3])
    mem = gdal.Warp("", path, format="MEM", outputBounds=bounds, width=lattice.width, height=lattice.height,
                    resampleAlg="near", srcNodata=0, dstNodata=0)
    if mem.RasterXSize != lattice.width or mem.RasterYSize != lattice.height or \
            not np.allclose(mem.GetGeoTransform(), gt, rtol=0, atol=1e-6 * lattice.pixel_width):
        raise AssertionError(f"{path} did not land on the lattice grid")
    return mem.GetRasterBand(1).ReadAsArray().astype(np.int64)


def grid_offset_m(info: rasters.RasterInfo, cell: float) -> tuple:
    """The grid's origin offset from the nearest multiple of ``cell`` (x, y), for the log."""
    gt = info.geotransform
    return tuple(round(float(v - cell * np.round(v / cell)), 2) for v in (gt[0], gt[3]))


def resolution_test(name: str, src: str, clf: Classifiers, record, tdm, log) -> None:
    """The source as given vs a 90 m copy of it off the lattice, compared on the source's lattice."""
    work = clf.work
    dem90 = tdm.lattice_dem(src, os.path.join(work, f"{name}_res_lattice.tif"))
    coarse = offset_copy(src, os.path.join(work, f"{name}_res_90m.tif"))
    coarse90 = tdm.lattice_dem(coarse, os.path.join(work, f"{name}_res_90m_lattice.tif"))
    _, lat = rasters.open_raster(dem90)
    fine = clf.paths(dem90, f"{name}_res_fine", model_dem=src)
    rough = clf.paths(coarse90, f"{name}_res_coarse", model_dem=coarse)
    offsets = {k: grid_offset_m(rasters.open_raster(p)[1], lat.pixel_width)
               for k, p in (("lattice", dem90), ("90 m copy", coarse90))}
    log(f"  resolution {name}: grid offsets (x, y) from the 90 m lines: {offsets}")
    for label in clf.labels:
        record("resolution 25-30 m vs 90 m", label,
               changed(on_lattice(fine[label], lat), on_lattice(rough[label], lat)))


def agreement(bases: dict, labels_: list, cell_m: float) -> dict:
    """Each model against the rules on the clean maps (bench/accuracy.py's measures) and every map's
    patches per km^2, pooled and per DEM."""
    from accuracy import patches_per_km2

    n = len(labels.DEFAULT_CLASSES)
    out = {"models": {}, "patches_km2": {}}
    cells = {dem: int(np.count_nonzero(b["rules"] > 0)) for dem, b in bases.items()}
    for label in labels_:
        per = {dem: patches_per_km2(np.where(b["rules"] > 0, b[label], 0), cell_m) for dem, b in bases.items()}
        pooled = float(np.average(list(per.values()), weights=[cells[d] for d in per]))
        out["patches_km2"][label] = {"pooled": pooled, "per_dem": per}
    for label in labels_[:-1]:
        cm_all = np.zeros((n, n), dtype=np.int64)
        per = {}
        for dem, b in bases.items():
            valid = b["rules"] > 0
            cm = metrics.confusion_matrix(b["rules"], b[label], n, mask=valid)
            cm_all += cm
            per[dem] = {"pa": metrics.pixel_accuracy(cm[1:, 1:]), "miou": metrics.mean_iou(cm[1:, 1:])}
        sub = cm_all[1:, 1:]
        out["models"][label] = {
            "pa": metrics.pixel_accuracy(sub), "miou": metrics.mean_iou(sub),
            "iou": {c.name: float(v) for c, v in zip(CLASSES, metrics.iou_per_class(sub))},
            "per_dem": per, "confusion_rows_rules": sub.tolist(),
        }
    return out


def evaluate(models: dict, data: str, work: str, dems=None, threads: int = 1, log=print) -> dict:
    import torch

    import train_default_model as tdm

    torch.set_num_threads(threads)
    clf = Classifiers(models, work)
    counts = {t: {label: {} for label in clf.labels} for t in CHANGE_TESTS if t != FLIPS_MAX}

    def record_for(dem):
        def record(test, label, c):
            counts[test][label][dem] = c
        return record

    held_out = [(i, n, rel) for i, (n, rel) in enumerate(tdm.HOLDOUT_DEMS.items()) if not dems or n in dems]
    fine = [(n, rel) for n, rel in RESOLUTION_DEMS.items() if not dems or n in dems]
    bases = {}
    for i, name, rel in held_out:
        t0 = time.perf_counter()
        dem90 = tdm.lattice_dem(os.path.join(data, rel), os.path.join(work, f"{name}_dem90.tif"))
        bases[name] = held_out_tests(name, i, dem90, clf, record_for(name))
        h, w = bases[name]["rules"].shape
        log(f"{name:11s} {w}x{h} cells: " + ", ".join(
            f"{label} noise 10 m {100 * _share(counts['noise 10 m'][label][name]):.2f} %" for label in clf.labels)
            + f"  ({time.perf_counter() - t0:.0f} s)")
    for name, rel in fine:
        t0 = time.perf_counter()
        resolution_test(name, os.path.join(data, rel), clf, record_for(name), tdm, log)
        log(f"{name:11s} resolution: " + ", ".join(
            f"{label} {100 * _share(counts['resolution 25-30 m vs 90 m'][label][name]):.2f} %" for label in clf.labels)
            + f"  ({time.perf_counter() - t0:.0f} s)")
    tests = {}
    for test, per_label in counts.items():
        tests[test] = {}
        for label, per_dem in per_label.items():
            if not per_dem:
                continue
            c = np.array(list(per_dem.values())).sum(axis=0)
            shares = [_share(v) for v in per_dem.values()]
            tests[test][label] = {"pooled": _share(c), "changed": int(c[0]), "compared": int(c[1]),
                                  "min": min(shares), "max": max(shares),
                                  "per_dem": {d: {"share": _share(v), "changed": v[0], "compared": v[1]}
                                              for d, v in per_dem.items()}}
    tests[FLIPS_MAX] = {label: flips_max([tests[f][label] for f in FLIPS]) for label in tests[next(iter(FLIPS))]}
    return {"models": models, "held_out_dems": {n: rel for _, n, rel in held_out},
            "resolution_dems": dict(fine), "seed": SEED, "tests": tests,
            "clean": agreement(bases, clf.labels, CELL_M) if bases else None,
            "classify_seconds": clf.seconds}


def flips_max(flips: list) -> dict:
    """The largest of the flips' change shares: pooled, and per DEM (for the range)."""
    per_dem = {d: max(f["per_dem"][d]["share"] for f in flips) for d in flips[0]["per_dem"]}
    return {"pooled": max(f["pooled"] for f in flips), "min": min(per_dem.values()), "max": max(per_dem.values()),
            "per_dem": per_dem}


def _share(c) -> float:
    return c[0] / c[1] if c[1] else float("nan")


def targets(tests: dict, label: str, clean: dict) -> dict:
    """test -> (target text, verdict) for one model."""
    def at_most(test, limit, moonshot=None):
        v = tests.get(test, {}).get(label, {}).get("pooled", np.nan)
        text = f"<= {limit:g} %" + (f" (moonshot {moonshot:g} %)" if moonshot else "")
        if np.isnan(v):
            return text, "-"
        verdict = "met" if 100 * v <= limit else "NOT met"
        if moonshot is not None:
            verdict += ", moonshot " + ("met" if 100 * v <= moonshot else "not")
        return text, verdict

    out = {"noise 3 m": at_most("noise 3 m", 1.0, 0.5), "noise 10 m": at_most("noise 10 m", 8.0, 3.0),
           "correlated 10 m / 1 km": at_most("correlated 10 m / 1 km", 8.0), "crop > 3 km": at_most("crop > 3 km", 0.5)}
    for test in ["shift 1 cell", *FLIPS, FLIPS_MAX]:
        out[test] = at_most(test, 1.0)
    crop = tests.get("crop 0-1 km", {})
    if label in crop and "rules" in crop:
        out["crop 0-1 km"] = (f"<= rules ({100 * crop['rules']['pooled']:.2f} %)",
                              "met" if crop[label]["pooled"] <= crop["rules"]["pooled"] else "NOT met")
    if clean:
        m = clean["models"][label]
        out["agreement PA"] = (">= 88 %", "met" if m["pa"] >= 0.88 else "NOT met")
        out["agreement MIoU"] = (">= 72 %", "met" if m["miou"] >= 0.72 else "NOT met")
    return out


def print_table(res: dict) -> None:
    tests, clean = res["tests"], res["clean"]
    models = list(res["models"])
    labels_ = models + ["rules"]
    goals = {m: targets(tests, m, clean) for m in models}
    print("held-out DEMs: " + (", ".join(f"{n} ({r})" for n, r in res["held_out_dems"].items()) or "none"))
    print("resolution DEMs: " + (", ".join(f"{n} ({r})" for n, r in res["resolution_dems"].items()) or "none"))
    width = max(14, *(len(m) for m in models))
    head = f"{'test':26s}" + "".join(f" {m:>{width}s} {'target':>26s} {'':24s}" for m in models) + f" {'rules':>9s}"
    print("\nclass changes against each classifier's own clean map, pooled over the DEMs (%)")
    print(head)
    print("-" * len(head))

    def row(name, values, rules_value):
        line = f"{name:26s}"
        for m in models:
            text, verdict = goals[m].get(name, ("", ""))
            line += f" {values[m]:>{width}s} {text:>26s} {verdict:24s}"
        print(line + f" {rules_value:>9s}")

    for test in CHANGE_TESTS:
        if tests[test]:
            row(test, {m: _pct(tests[test].get(m, {}).get("pooled")) for m in models},
                _pct(tests[test].get("rules", {}).get("pooled")))
    if clean:
        print("-" * len(head))
        row("agreement PA", {m: _pct(clean["models"][m]["pa"]) for m in models}, "(ref.)")
        row("agreement MIoU", {m: _pct(clean["models"][m]["miou"]) for m in models}, "(ref.)")
        for c in CLASSES:
            row(f"  IoU {c.name.lower()}", {m: _pct(clean["models"][m]["iou"][c.name]) for m in models}, "(ref.)")
        p = clean["patches_km2"]
        row("patches per km2", {m: f"{p[m]['pooled']:.3f}" for m in models}, f"{p['rules']['pooled']:.3f}")

    print("\nrange over the DEMs (min-max, %)")
    head2 = f"{'test':26s}" + "".join(f" {lb:>{max(15, len(lb))}s}" for lb in labels_)
    print(head2)
    print("-" * len(head2))
    for test in CHANGE_TESTS:
        if tests[test]:
            print(f"{test:26s}" + "".join(
                f" {_range(tests[test].get(lb)):>{max(15, len(lb))}s}" for lb in labels_))
    if clean:
        for key, name in (("pa", "agreement PA"), ("miou", "agreement MIoU")):
            vals = {m: [100 * v[key] for v in clean["models"][m]["per_dem"].values()] for m in models}
            print(f"{name:26s}" + "".join(
                f" {f'{min(vals[m]):.1f}-{max(vals[m]):.1f}':>{max(15, len(m))}s}" for m in models))
        per = {lb: list(clean["patches_km2"][lb]["per_dem"].values()) for lb in labels_}
        print(f"{'patches per km2':26s}" + "".join(
            f" {f'{min(per[lb]):.3f}-{max(per[lb]):.3f}':>{max(15, len(lb))}s}" for lb in labels_))


def _pct(v) -> str:
    return "-" if v is None or np.isnan(v) else f"{100 * v:.2f}"


def _range(t) -> str:
    return "-" if not t else f"{100 * t['min']:.2f}-{100 * t['max']:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model file (repeatable; default: the bundled default model)")
    ap.add_argument("--data", default=os.environ.get("LANDFORM_DEM_DATA"),
                    help="folder holding the DEMs (default: $LANDFORM_DEM_DATA)")
    ap.add_argument("--json", default=os.path.join(REPO, "artifacts", "bench", "robustness.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", help="folder for the rasters (kept; default: a temporary folder)")
    ap.add_argument("--dems", help="comma-separated DEM names to restrict a quick run to")
    ap.add_argument("--steady", default="off",
                    help="comma-separated 'steady' choices of classification to run every model with "
                         "(off, flips, all; default off); a model run with another choice than off is "
                         "labelled STEM+CHOICE")
    ap.add_argument("--smoothing", default="default",
                    help="comma-separated smoothing sigmas (cells) to run every model with (default: the "
                         "classification's default); a model run with another value is labelled STEM+sSIGMA")
    args = ap.parse_args(argv)
    if not args.data or not os.path.isdir(args.data):
        print(f"error: the DEM folder {args.data} is missing (give --data or set LANDFORM_DEM_DATA)", file=sys.stderr)
        return 2
    paths = args.model or [os.path.join(REPO, "models", "default_model.safetensors")]
    steadies = [v.strip() for v in args.steady.split(",") if v.strip()]
    sigmas = [None if v.strip() == "default" else float(v) for v in args.smoothing.split(",") if v.strip()]
    models = {}
    for p in paths:
        for v in steadies:
            for sg in sigmas:
                label = (os.path.splitext(os.path.basename(p))[0] + ("" if v == "off" else f"+{v}")
                         + ("" if sg is None else f"+s{sg:g}"))
                models[label] = (p, {"steady": v, "smoothing": sg})
    if len(models) != len(paths) * len(steadies) * len(sigmas) or "rules" in models:
        print("error: the model files need distinct names other than 'rules' (labels are file stems)", file=sys.stderr)
        return 2
    dems = set(args.dems.split(",")) if args.dems else None
    import train_default_model as tdm

    unknown = sorted((dems or set()) - set(tdm.HOLDOUT_DEMS) - set(RESOLUTION_DEMS))
    if unknown:
        print(f"error: unknown DEM name(s) {', '.join(unknown)}; known: "
              + ", ".join(sorted({*tdm.HOLDOUT_DEMS, *RESOLUTION_DEMS})), file=sys.stderr)
        return 2
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"load average (1, 5, 15 min): {load}; torch threads {args.threads}")
    t0 = time.perf_counter()
    if args.work:
        os.makedirs(args.work, exist_ok=True)
        res = evaluate(models, args.data, args.work, dems, args.threads)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_robustness_") as work:
            res = evaluate(models, args.data, work, dems, args.threads)
    res["seconds"] = time.perf_counter() - t0
    res["load_average"] = os.getloadavg()
    print_table(res)
    print(f"\n{res['seconds']:.0f} s; classification time: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in res["classify_seconds"].items()))
    write_json(res, args.json)
    print(f"written {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
