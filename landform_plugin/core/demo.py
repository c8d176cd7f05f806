"""``make demo``: classify the bundled sample DEM with the bundled default model.

    python -m landform_plugin.core demo --out artifacts/demo

Writes, under --out:

- ``<name>_classes.tif``      landform classes (Byte, 0 no data, 1 plain, 2 platform,
                              3 hill, 4 mountain; colour table), on the DEM's grid;
- ``<name>_confidence.tif``   per-class probabilities and the top-class confidence;
- ``<name>_rules.tif``        the rule-based classes (core.rules) for comparison;
- ``<name>_preview.png``      hillshade with the classes over it, a legend, the
                              top-class confidence, and the rule-based classes;
- ``summary.json``            class shares, timings (seconds per megapixel).

The sample DEM is resources/sample/boulder_frontrange_srtmgl3.tif (SRTM 3",
Front Range and High Plains at Boulder, Colorado; see its SOURCE.md). It is one
of the DEMs held out of the default model's training.
"""
import json
import os
import time

from . import preview, rules
from .errors import LandformError
from .progress import Progress

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
SAMPLE_DEM = os.path.join(REPO, "resources", "sample", "boulder_frontrange_srtmgl3.tif")
DEFAULT_MODEL = os.path.join(REPO, "models", "default_model.safetensors")


def run_demo(out_dir: str, dem: str = SAMPLE_DEM, model: str = DEFAULT_MODEL, device: str = "auto",
             progress: Progress = None) -> dict:
    progress = progress or Progress()
    if not os.path.isfile(dem):
        raise LandformError(f"The sample DEM '{dem}' is missing from this checkout.")
    if not os.path.isfile(model):
        raise LandformError(
            f"The default model '{model}' is missing. It ships with the repository (models/); "
            "to rebuild it run 'python tools/train_default_model.py' (see models/README.md)."
        )
    from . import predict  # needs torch only when the model runs

    os.makedirs(out_dir, exist_ok=True)
    name = os.path.splitext(os.path.basename(dem))[0]
    class_out = os.path.join(out_dir, f"{name}_classes.tif")
    conf_out = os.path.join(out_dir, f"{name}_confidence.tif")
    rules_out = os.path.join(out_dir, f"{name}_rules.tif")
    png = os.path.join(out_dir, f"{name}_preview.png")

    progress.info(f"Classifying {dem} with {model}")
    t0 = time.perf_counter()
    res = predict.classify_raster(dem, model, class_out, conf_out, device=device, progress=progress.sub(0, 80))
    t_model = time.perf_counter() - t0
    t0 = time.perf_counter()
    rres = rules.classify_raster(dem, rules_out, progress=progress.sub(80, 90))
    t_rules = time.perf_counter() - t0
    w, h = res["processing_size"]
    mpx = w * h / 1e6
    preview.render_preview(
        dem, class_out, png, confidence_path=conf_out, compare_path=rules_out,
        class_title="Default model: landform classes over hillshade",
        title=f"Default model on {os.path.basename(dem)} ({w} x {h} cells at {res['pixel_size_m']:g} m)",
    )
    progress.update(100)
    summary = {
        "dem": os.path.relpath(dem, REPO) if dem.startswith(REPO) else dem,
        "model": os.path.relpath(model, REPO) if model.startswith(REPO) else model,
        "outputs": {"classes": class_out, "confidence": conf_out, "rules": rules_out, "preview": png},
        "model_class_shares_percent": {k: round(100 * v, 2) for k, v in res["class_shares"].items()},
        "rules_class_shares_percent": {k: round(v, 2) for k, v in rres["shares"].items()},
        "processing_megapixels": round(mpx, 3),
        "model_seconds": round(t_model, 2),
        "model_seconds_per_megapixel": round(t_model / mpx, 2) if mpx else None,
        "rules_seconds": round(t_rules, 2),
        "device": res.get("device"),
    }
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def _cli(args) -> int:
    s = run_demo(args.out, args.dem, args.model, args.device, Progress(log=print))
    print(f"classes:    {s['outputs']['classes']}")
    print(f"confidence: {s['outputs']['confidence']}")
    print(f"rules:      {s['outputs']['rules']}")
    print(f"preview:    {s['outputs']['preview']}")
    print("model shares: " + ", ".join(f"{k} {v:.1f} %" for k, v in s["model_class_shares_percent"].items()))
    print("rules shares: " + ", ".join(f"{k} {v:.1f} %" for k, v in s["rules_class_shares_percent"].items()))
    print(f"{s['processing_megapixels']} Mpx in {s['model_seconds']} s on {s['device']}: "
          f"{s['model_seconds_per_megapixel']} s per megapixel")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("demo", help="classify the bundled sample DEM with the default model; writes a PNG preview")
    p.add_argument("--out", default=os.path.join("artifacts", "demo"), help="output folder (default artifacts/demo)")
    p.add_argument("--dem", default=SAMPLE_DEM, help="DEM to classify (default: the bundled sample)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model file (default: models/default_model.safetensors)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_cli)
