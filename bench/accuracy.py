"""Accuracy of the default model against the rule labels on the held-out DEMs.

    .venv/bin/python bench/accuracy.py [--model models/default_model.safetensors]

For every DEM in tools/train_default_model.HOLDOUT_DEMS (never used in
training): the DEM is put on its 90 m processing lattice exactly as for
training (core.grid: UTM zone if geographic, own CRS if projected;
average/bilinear), labelled by core.rules (the REFERENCE: rule
labels, not a human landform map) and classified by the model with
core.predict on that same grid, so no resampling enters the comparison.

Printed per DEM and pooled over all of them (pixels weighted equally):
- PA and MIoU (core.metrics) over the valid DEM cells, i.e. over the four
  landform classes. (The paper's MIoU also counts class 0 "no data"; on these
  rasters both maps put 0 exactly on NoData, which would add a free IoU of 1.)
- per-class IoU;
- fragmentation: connected patches (8-neighbour, per class) per km^2 of valid
  area, for the rules and for the model, and their ratio (model / rules: below
  1 means smoother maps);
- timing: model seconds per megapixel on this CPU, next to the rules' time on
  the same grids (the reference measured in the same run), and peak RSS.
Targets: PA >= 85 %, MIoU >= 70 % pooled over the held-out DEMs.
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tools"))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from landform_plugin.core import labels, metrics, rasters, rules  # noqa: E402

CLASSES = [c for c in labels.DEFAULT_CLASSES if c.code != labels.NODATA_CLASS]
EIGHT = np.ones((3, 3), dtype=bool)


def patches_per_km2(cls: np.ndarray, cell_m: float) -> float:
    valid = cls > 0
    n = 0
    for c in CLASSES:
        _, k = ndimage.label(cls == c.code, structure=EIGHT)
        n += k
    area_km2 = valid.sum() * cell_m * cell_m / 1e6
    return n / area_km2 if area_km2 else float("nan")


def write_json(res: dict, path: str) -> None:
    """A bench's figures as JSON (numpy numbers as floats), its folder made if needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(res, fh, indent=1, default=float)


def evaluate(model: str, data: str, work: str, threads: int = 2, log=print, smoothing=None) -> dict:
    import torch

    import train_default_model as tdm
    from landform_plugin.core import predict

    torch.set_num_threads(threads)
    predictor = predict.Predictor.from_file(model, "cpu")
    rows = []
    cm_all = np.zeros((len(labels.DEFAULT_CLASSES),) * 2, dtype=np.int64)
    t_model = t_rules = mpx_all = 0.0
    for name, rel in tdm.HOLDOUT_DEMS.items():
        src = os.path.join(data, rel)
        dem90 = tdm.lattice_dem(src, os.path.join(work, f"{name}_dem90.tif"))
        ref_path = os.path.join(work, f"{name}_rules.tif")
        t0 = time.perf_counter()
        rules.classify_raster(dem90, ref_path)
        tr = time.perf_counter() - t0
        out = os.path.join(work, f"{name}_model.tif")
        t0 = time.perf_counter()
        predict.classify_raster(dem90, model, out, None, device="cpu", predictor=predictor, smoothing=smoothing)
        tm = time.perf_counter() - t0
        ref = rasters.read_array(ref_path).astype(np.int64)
        pred = rasters.read_array(out).astype(np.int64)
        valid = ref > 0
        cm = metrics.confusion_matrix(ref, pred, len(labels.DEFAULT_CLASSES), mask=valid)
        cm_all += cm
        sub = cm[1:, 1:]
        iou = metrics.iou_per_class(sub)
        _, info = rasters.open_raster(dem90)
        cell = info.pixel_width
        mpx = info.width * info.height / 1e6
        fr, fm = patches_per_km2(np.where(valid, ref, 0), cell), patches_per_km2(np.where(valid, pred, 0), cell)
        row = {
            "dem": name, "source": rel, "cells": int(valid.sum()),
            "pa": metrics.pixel_accuracy(sub), "miou": metrics.mean_iou(sub),
            "iou": {c.name: (None if np.isnan(v) else float(v)) for c, v in zip(CLASSES, iou)},
            "rule_share": {c.name: float(np.mean(ref[valid] == c.code)) for c in CLASSES},
            "model_share": {c.name: float(np.mean(pred[valid] == c.code)) for c in CLASSES},
            "patches_km2_rules": fr, "patches_km2_model": fm,
            "model_s": tm, "rules_s": tr, "megapixels": mpx,
        }
        rows.append(row)
        t_model += tm
        t_rules += tr
        mpx_all += mpx
        log(f"{name:11s} PA {100 * row['pa']:5.1f} %  MIoU {100 * row['miou']:5.1f} %  "
            f"patches/km2 rules {fr:.3f} model {fm:.3f}  ({tm:.1f} s)")
    sub = cm_all[1:, 1:]
    # pooled fragmentation: total patches / total area
    pooled = {
        "pa": metrics.pixel_accuracy(sub),
        "miou": metrics.mean_iou(sub),
        "iou": {c.name: float(v) for c, v in zip(CLASSES, metrics.iou_per_class(sub))},
        "precision": {c.name: float(v) for c, v in zip(CLASSES, metrics.precision_per_class(sub))},
        "recall": {c.name: float(v) for c, v in zip(CLASSES, metrics.recall_per_class(sub))},
        "confusion_rows_reference": sub.tolist(),
        "patches_km2_rules": float(np.average([r["patches_km2_rules"] for r in rows], weights=[r["cells"] for r in rows])),
        "patches_km2_model": float(np.average([r["patches_km2_model"] for r in rows], weights=[r["cells"] for r in rows])),
        "model_s_per_mpx": t_model / mpx_all,
        "rules_s_per_mpx": t_rules / mpx_all,
        "megapixels": mpx_all,
    }
    return {"model": model, "rows": rows, "pooled": pooled}


def print_table(res: dict) -> None:
    names = [c.name for c in CLASSES]
    head = f"{'held-out DEM':12s} {'cells':>8s} {'PA %':>6s} {'MIoU %':>7s} " + " ".join(f"{'IoU ' + n[:5]:>10s}" for n in names) \
        + f" {'patch/km2 rules':>16s} {'model':>7s} {'ratio':>6s}"
    print(head)
    print("-" * len(head))

    def line(label, cells, pa, miou, iou, fr, fm):
        ious = " ".join(f"{(100 * iou[n] if iou[n] is not None and not np.isnan(iou[n]) else float('nan')):10.1f}" for n in names)
        print(f"{label:12s} {cells:8d} {100 * pa:6.1f} {100 * miou:7.1f} {ious} {fr:16.3f} {fm:7.3f} {fm / fr:6.2f}")

    for r in res["rows"]:
        line(r["dem"], r["cells"], r["pa"], r["miou"], r["iou"], r["patches_km2_rules"], r["patches_km2_model"])
    p = res["pooled"]
    print("-" * len(head))
    line("ALL (pooled)", sum(r["cells"] for r in res["rows"]), p["pa"], p["miou"], p["iou"], p["patches_km2_rules"],
         p["patches_km2_model"])
    print(f"\ntargets: PA >= 85 % -> {'met' if p['pa'] >= 0.85 else 'NOT met'}; "
          f"MIoU >= 70 % -> {'met' if p['miou'] >= 0.70 else 'NOT met'}")
    print(f"model {p['model_s_per_mpx']:.2f} s per megapixel (CPU) vs rules {p['rules_s_per_mpx']:.3f} s per megapixel: "
          f"ratio {p['model_s_per_mpx'] / p['rules_s_per_mpx']:.0f}x; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print("pooled confusion (rows = rule label, columns = model), order " + ", ".join(names) + ":")
    for n, row in zip(names, p["confusion_rows_reference"]):
        print(f"  {n:9s} " + " ".join(f"{v:9d}" for v in row))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(REPO, "models", "default_model.safetensors"))
    ap.add_argument("--data", default=os.environ.get("LANDFORM_DEM_DATA"),
                    help="folder holding the held-out DEMs (default: $LANDFORM_DEM_DATA)")
    ap.add_argument("--json", default=os.path.join(REPO, "artifacts", "bench", "accuracy.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoothing", type=float, default=None,
                    help="the classification's smoothing sigma in cells (default: its default)")
    args = ap.parse_args(argv)
    if not args.data or not os.path.isdir(args.data):
        print(f"error: the DEM folder {args.data} is missing (give --data or set LANDFORM_DEM_DATA)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_accuracy_") as work:
        res = evaluate(args.model, args.data, work, args.threads, smoothing=args.smoothing)
    print_table(res)
    write_json(res, args.json)
    print(f"\nwritten {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
