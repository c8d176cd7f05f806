"""Train the bundled default model (models/default_model.safetensors) from scratch.

    nice -n 10 .venv/bin/python tools/train_default_model.py            # everything
    .venv/bin/python tools/train_default_model.py --stage prepare        # data only
    nice -n 10 .venv/bin/python tools/train_default_model.py --robust --init CLEAN.safetensors \
        --work build/robust_model                                         # the robust recipe

The bundled file is the fifth stage of a chain: a clean run, the robust recipe from it, the
robust recipe again from that with ``--epochs 8 --lr 3e-4 --consistency 2``, once more with
``--lr 2e-4 --consistency 2 --seed 1``, and last with ``--epochs 6 --lr 3e-4 --consistency 2
--seed 2 --denoise-m 90`` (inputs derived from a denoised DEM; the five commands are in
models/README.md, "Recipe").

Stages (each reuses the project's own code; nothing here is a second copy):

1. prepare: every DEM of TRAIN_DEMS and HOLDOUT_DEMS (from --data)
   is put on its 90 m processing lattice (core.grid, as classification does:
   a geographic DEM in its UTM zone, a projected one in its own CRS; average
   when coarsening by more than 1.5x, else bilinear), labelled by core.rules with the default rule
   parameters (labels are RULE-DERIVED, not a human landform map), and the
   training DEMs are cut into 256 x 256 chips by core.chips (twice: once on the
   grid's origin and once shifted by half a chip, so chip edges fall in
   different places), merged into one chip folder.
2. train: core.train with the recipe below (CPU, fp32).
3. pack: BatchNorm running statistics re-estimated as exact averages over
   training batches (small-batch BatchNorm drifts; core.train.recalibrate_batchnorm) and kept
   if the validation chips, scored in eval mode, say they are better than the statistics
   training left (stage 5 kept the trained ones), the spec's tile size set to
   INFERENCE_TILE, weights stored as float16 (core.modelfile loads them into the
   float32 network; the file stays well under 50 MB).

The robust recipe (``--robust``) adds ROBUST_COPIES perturbed copies of each training DEM
(core.perturb: noise, smooth error fields, voids, crops; labels from the clean DEM) to the
chips and fine-tunes a clean model (``--init``, trained by the plain recipe) on them.

Held-out DEMs (HOLDOUT_DEMS) never enter chips; bench/accuracy.py scores the
model on them. Everything is written under --work (default build/default_model).
"""
import argparse
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from osgeo import gdal  # noqa: E402

from landform_plugin.core import chips, perturb, rasters, rules  # noqa: E402
from landform_plugin.core.progress import Progress  # noqa: E402

DATA = os.environ.get("LANDFORM_DEM_DATA")  # the folder holding the DEMs named below
PIXEL_SIZE_M = 90.0
CHIP_SIZE = 128
INFERENCE_TILE = 512  # written into the spec: BatchNorm in eval mode is tile-independent
FACTORS = ["dem", "rdls", "slope"]

# name -> path under the data folder
TRAIN_DEMS = {
    "sanjoaquin_sierra": "jaanga_terrain_plus_srtm3/N36W120_srtm3_viewfinder.tif",
    "sacramento_sierra": "jaanga_terrain_plus_srtm3/N39W122_srtm3_viewfinder.tif",
    "sierra_foothills": "jaanga_terrain_plus_srtm3/N38W121_srtm3_viewfinder.tif",
    "basin_and_range": "jaanga_terrain_plus_srtm3/N38W117_srtm3_viewfinder.tif",
    "north_german_plain": "graphhopper_srtm3/N52E008_srtm3.tif",
    "lower_elbe": "graphhopper_srtm3/N53E009_srtm3.tif",
    "thuringia": "graphhopper_srtm3/N50E011_srtm3.tif",
    "southern_uplands": "graphhopper_srtm3/N55W003_srtm3.tif",
    "catalonia": "graphhopper_srtm3/N41E001_srtm3.tif",
    "ventoux": "shareloc_cnes_srtm3/N44E005_ventoux_srtm3.tif",
    "deadsea_moab": "srtm_geotiff_nicholas_fong/N31E035_deadsea_moab_srtm3.tif",
    "logan": "taudem_testsuite/logan_utah_100m_nad83utm12.tif",
    "tunisia_bizerte": "topopy_geolovic/tunisia_north_bizerte_28m_utm32.tif",
    "missoula": "windninja_firelab/missoula_valley_montana_31m_utm11.tif",
    "mackay": "windninja_firelab/mackay_idaho_30m_utm12.tif",
}
# Never trained on: a mountain range, a prairie plain, plateaus, the demo sample,
# hills-and-mountains, and a valley plain with hills.
HOLDOUT_DEMS = {
    "bigtujunga": "topotoolbox_dems/bigtujunga_srtm30m_utm11.tif",  # San Gabriel Mountains
    "fortworth": "pysheds_data/fortworth_3arcsec_dem.tif",  # Fort Worth prairie
    "zion": "spdatalarge/zion_srtm_3arcsec.tif",  # Zion / Kolob plateaus
    "boulder": "landlab_tutorial_data/boulder_frontrange_srtmgl3.tif",  # Front Range + High Plains (demo)
    "jacksboro": "matplotlib_sample_data/jacksboro_fault_dem_3arcsec.tif",  # Cumberland Mountains
    "diablo": "jaanga_terrain_plus_srtm3/N36W121_srtm3_viewfinder.tif",  # San Joaquin floor + Diablo Range
}

# The recipe (see models/README.md for why).
TRAIN_ARGS = dict(
    architecture="fcn_resnet",
    backbone="resnet18",
    multichannel="stack",  # what the bundled model was trained with (TrainConfig's default is now per_factor)
    norm="batch",
    arch_options={"decoder_channels": 128},
    lr=1e-3,
    hold_epochs=0,
    epochs=12,
    batch_size=16,
    val_fraction=0.15,
    seed=0,
    class_weights="paper",
    weight_cap=10.0,
    augment=True,
    amp="off",
    device="cpu",
    threads=1,  # 2 threads burned 2.5-3x the CPU per step on this shared 2-core machine (OpenMP waits)
    keep="best",
)


# The robust recipe: perturbed copies of every training DEM (core.perturb: noise, smooth error
# fields, voids, crops; labels from the clean DEM) added to the clean chips, and the clean model
# fine-tuned on them (its weights as the start; a lower learning rate, a few epochs).
ROBUST_COPIES = 3
FINETUNE_ARGS = dict(TRAIN_ARGS, lr=5e-4, epochs=15)


def lattice_dem(src_path: str, dst_path: str, pixel_size_m: float = PIXEL_SIZE_M) -> str:
    """Write the DEM on its processing lattice at ``pixel_size_m`` (core.grid, through
    core.chips.chip_grid: the cells classification predicts) to ``dst_path`` (float32, NaN NoData)."""
    grid = chips.chip_grid(src_path, pixel_size_m)
    os.makedirs(os.path.dirname(dst_path), exist_ok=True)
    out = gdal.Translate(dst_path, grid.ds, format="GTiff", creationOptions=rasters.GTIFF_OPTIONS)
    if out is None:
        raise RuntimeError(f"could not write {dst_path}: {gdal.GetLastErrorMsg()}")
    out = None
    return dst_path


def prepare(work: str, data: str, log=print, robust_copies: int = 0, seed: int = 0, denoise_m: float = 0.0) -> dict:
    """Warp, label and chip (with ``robust_copies`` perturbed copies of each training DEM, drawn
    from ``seed``: another seed gives other noise, voids and crops); returns a summary (also
    written to work/prepare.json)."""
    summary = {"pixel_size_m": PIXEL_SIZE_M, "chip_size": CHIP_SIZE, "factors": FACTORS, "dems": {},
               "robust_copies": robust_copies}
    for group, dems in (("train", TRAIN_DEMS), ("holdout", HOLDOUT_DEMS)):
        for name, rel in dems.items():
            src = os.path.join(data, rel)
            dem90 = os.path.join(work, "dem90", f"{name}.tif")
            lab90 = os.path.join(work, "rules90", f"{name}.tif")
            lattice_dem(src, dem90)
            res = rules.classify_raster(dem90, lab90)
            _, info = rasters.open_raster(dem90)
            summary["dems"][name] = {
                "group": group, "source": rel, "dem90": dem90, "labels": lab90,
                "size": [info.width, info.height], "shares": res["shares"],
            }
            log(f"{group:8s} {name:20s} {info.width}x{info.height} "
                + ", ".join(f"{k} {v:.1f}%" for k, v in res["shares"].items()))
    parts = []
    for name in TRAIN_DEMS:
        d = summary["dems"][name]
        w, h = d["size"]
        variants = [("a", None)]
        if w >= CHIP_SIZE + CHIP_SIZE // 2 and h >= CHIP_SIZE + CHIP_SIZE // 2:
            variants.append(("b", CHIP_SIZE // 2))
        for tag, off in variants:
            dem = d["dem90"]
            if off:
                dem = os.path.join(work, "dem90_shifted", f"{name}.tif")
                os.makedirs(os.path.dirname(dem), exist_ok=True)
                gdal.Translate(dem, d["dem90"], srcWin=[off, off, w - off, h - off], creationOptions=rasters.GTIFF_OPTIONS)
            if w - (off or 0) < CHIP_SIZE or h - (off or 0) < CHIP_SIZE:
                log(f"{name}: smaller than one chip, skipped")
                continue
            out = os.path.join(work, "chip_parts", f"{name}_{tag}")
            cfg = chips.ChipConfig(dems=[dem], labels=d["labels"], out_dir=out, factors=FACTORS,
                                   chip_size=CHIP_SIZE, strategy="original", min_labelled=0.5,
                                   robust_copies=robust_copies if tag == "a" else 0, denoise_m=denoise_m,
                                   seed=seed * len(TRAIN_DEMS) + list(TRAIN_DEMS).index(name))
            m = chips.export_chips(cfg)
            log(f"{name}_{tag}: {len(m['chips'])} chips")
            parts.append(out)
    merged = merge_chip_folders(parts, os.path.join(work, "chips"))
    counts = np.asarray(merged["class_counts"], dtype=float)
    summary["chips"] = len(merged["chips"])
    summary["class_shares_chips"] = {c["name"]: round(100 * n / counts.sum(), 2) for c, n in zip(merged["classes"], counts)}
    log(f"{summary['chips']} chips; class shares {summary['class_shares_chips']}")
    with open(os.path.join(work, "prepare.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def merge_chip_folders(parts, out_dir: str) -> dict:
    """One chip folder from several (core.chips writes one label raster per call)."""
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(os.path.join(out_dir, "chips"))
    merged = None
    for part in parts:
        m = chips.read_manifest(part)
        if merged is None:
            merged = {k: v for k, v in m.items() if k not in ("chips", "sources", "class_counts")}
            merged.update(chips=[], sources=[], class_counts=[0] * len(m["class_counts"]))
        for key in ("chip_size", "input_factors", "normalisation", "pixel_size_m", "num_classes"):
            if m[key] != merged[key]:
                raise ValueError(f"chip folders differ in {key}")
        base = len(merged["sources"])
        merged["sources"].extend(m["sources"])
        merged["class_counts"] = [a + b for a, b in zip(merged["class_counts"], m["class_counts"])]
        for c in m["chips"]:
            cid = f"{len(merged['chips']):06d}"
            for k in ("x", "y"):
                dst = f"chips/{cid}_{k}.npy"
                os.replace(os.path.join(part, c[k]), os.path.join(out_dir, dst))
                c[k] = dst
            c["id"], c["source"] = cid, base + int(c["source"])
            merged["chips"].append(c)
    with open(os.path.join(out_dir, chips.MANIFEST), "w") as fh:
        json.dump(merged, fh, indent=1)
    return merged


def train_model(work: str, out: str, minutes: float, log=print, overrides=None, resume=False, init=None):
    """Train from scratch, or fine-tune the model file ``init`` (the robust recipe); ``overrides``:
    TrainConfig fields that replace the recipe's (``recipe_overrides``)."""
    from landform_plugin.core import train

    args = dict(FINETUNE_ARGS if init else TRAIN_ARGS, **(overrides or {}))
    cfg = train.TrainConfig(chips=os.path.join(work, "chips"), out=os.path.join(work, "model_fp32.safetensors"),
                            max_minutes=minutes, resume="auto" if resume else None, init_model=init, **args)
    res = train.train(cfg, Progress(log=log))
    return res


def recalibrate_bn(model_path: str, chip_dir: str, batches: int = 60, batch_size: int = 16, log=print):
    """Re-estimate BatchNorm running statistics (core.train.recalibrate_batchnorm) and keep them
    if they score better on the validation chips (eval mode) than the statistics training left
    (its running averages). Returns (model, spec, val_scores, recalibrated)."""
    import copy

    import torch

    from landform_plugin.core import metrics, modelfile, train

    model, spec = modelfile.load_model(model_path)
    manifest = chips.read_manifest(chip_dir)
    train_ids, val_ids = train.split_chips(len(manifest["chips"]), TRAIN_ARGS["val_fraction"], TRAIN_ARGS["seed"])
    step = train.Step(torch.device("cpu"), int(manifest["num_classes"]), int(manifest.get("ignore_index", 255)))

    def validate():
        cm = train.evaluate_chips(model, train.ChipSet(chip_dir, manifest, val_ids, False, 0), step, batch_size,
                                  Progress())[0]
        return metrics.scores(cm, [c["name"] for c in manifest["classes"]])

    trained, state = validate(), copy.deepcopy(model.state_dict())
    train.recalibrate_batchnorm(model, train.ChipSet(chip_dir, manifest, train_ids, True, 123), batches, batch_size,
                                step, Progress())
    scores = validate()
    log(f"validation with the trained BatchNorm statistics: PA {100 * trained.pa:.2f} %, MIoU {100 * trained.miou:.2f} %; "
        f"re-estimated: PA {100 * scores.pa:.2f} %, MIoU {100 * scores.miou:.2f} %")
    if trained.miou > scores.miou:
        model.load_state_dict(state)
        model.eval()
        log("kept the trained statistics")
        return model, spec, trained, False
    return model, spec, scores, True


def pack(fp32_path: str, chip_dir: str, dst: str, log=print, init=None, options: str = "") -> str:
    """Recalibrate BatchNorm (if that validates better), update the spec and write float16 weights to ``dst`` (``init``: the
    model the robust recipe fine-tuned; ``options``: the recipe's overrides, for the spec's command)."""
    import torch

    from landform_plugin.core import modelfile

    model, spec, scores, recalibrated = recalibrate_bn(fp32_path, chip_dir, log=log)
    spec["tile_size"] = INFERENCE_TILE
    spec.setdefault("training", {})["stored_dtype"] = "float16"
    spec["training"]["bn_recalibrated"] = (
        "running statistics = exact means over 60 training batches of 16" if recalibrated else
        "running statistics as training left them: re-estimating them over 60 training batches scored a lower "
        "validation MIoU")
    spec["training"].update(
        label_source="rule-derived: core.rules with its default parameters (first level of Cheng et al. 2011); "
                     "not a human landform map",
        train_dems=list(TRAIN_DEMS), held_out_dems=list(HOLDOUT_DEMS),
        data_grid=f"each DEM on its {PIXEL_SIZE_M:g} m processing lattice (core.grid)",
        command="nice -n 10 .venv/bin/python tools/train_default_model.py"
                + (f" --robust --init {os.path.relpath(init, REPO)}" if init else "") + options,
    )
    spec["training"]["chips"] = os.path.relpath(chip_dir, REPO)
    if init:
        spec["training"]["robust_recipe"] = (
            f"{ROBUST_COPIES} perturbed copies of each training DEM (core.perturb: white noise 0-{perturb.NOISE_MAX_M:g} m, "
            f"a smooth error field in {100 * perturb.CORRELATED_P:.0f} % of them, voids in {100 * perturb.VOIDS_P:.0f} %, "
            f"a crop in {100 * perturb.CUT_P:.0f} %) with the labels of the clean DEM, added to the clean chips; "
            f"fine-tuned from {os.path.basename(init)}")
    spec.setdefault("metrics", {}).update(
        val_pa=round(100 * scores.pa, 2), val_miou=round(100 * scores.miou, 2), validation=scores.as_dict(),
    )
    modelfile.save_model(dst, model, spec, half=True)
    os.chmod(dst, 0o644)
    # The float16 file must load into the float32 network and give the same classes.
    m16, _ = modelfile.load_model(dst)
    manifest = chips.read_manifest(chip_dir)
    x = np.stack([np.load(os.path.join(chip_dir, c["x"])) for c in manifest["chips"][:8]])
    with torch.no_grad():
        a = model(torch.from_numpy(x)).argmax(1)
        b = m16(torch.from_numpy(x)).argmax(1)
    agree = float((a == b).float().mean())
    log(f"float16 weights: class agreement with float32 on 8 chips {100 * agree:.3f} %")
    return dst


def recipe_overrides(args) -> dict:
    """The recipe settings given on the command line (--epochs, --lr, --consistency)."""
    given = {"epochs": args.epochs, "lr": args.lr, "consistency": args.consistency}
    return {k: v for k, v in given.items() if v}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=os.path.join(REPO, "build", "default_model"))
    ap.add_argument("--data", default=DATA, required=DATA is None,
                    help="folder holding the DEMs of TRAIN_DEMS and HOLDOUT_DEMS (default: $LANDFORM_DEM_DATA)")
    ap.add_argument("--out", default=os.path.join(REPO, "models", "default_model.safetensors"))
    ap.add_argument("--minutes", type=float, default=45.0, help="stop training after this many minutes")
    ap.add_argument("--stage", choices=["all", "prepare", "train", "pack"], default="all")
    ap.add_argument("--epochs", type=int, default=None, help=f"override the planned epochs ({TRAIN_ARGS['epochs']})")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    ap.add_argument("--seed", type=int, default=0,
                    help="with --robust: draw other perturbed copies (seed 0: those of the bundled model's chips)")
    ap.add_argument("--consistency", type=float, default=None,
                    help="weight of core.train's shift/flip consistency term (default 0: off)")
    ap.add_argument("--robust", action="store_true",
                    help=f"the robust recipe: add {ROBUST_COPIES} perturbed copies of each training DEM and fine-tune "
                         "the clean model given by --init")
    ap.add_argument("--init", default=None, help="with --robust: the clean model to fine-tune (trained without --robust)")
    ap.add_argument("--denoise-m", type=float, default=0.0,
                    help="low-pass the DEM by a Gaussian of this many metres before deriving the inputs (core.inputs; "
                         "the model file keeps the rule)")
    args = ap.parse_args(argv)
    if args.robust and not args.init and args.stage != "prepare":
        ap.error("--robust fine-tunes a clean model: give it with --init")
    init = args.init if args.robust else None
    t0 = time.time()

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')} +{time.time() - t0:6.0f}s] {msg}", flush=True)

    os.makedirs(args.work, exist_ok=True)
    if args.stage in ("all", "prepare"):
        prepare(args.work, args.data, log, ROBUST_COPIES if args.robust else 0, args.seed, args.denoise_m)
    if args.stage in ("all", "train"):
        train_model(args.work, args.out, args.minutes, log, recipe_overrides(args), args.resume, init)
    if args.stage in ("all", "train", "pack"):
        given = dict(recipe_overrides(args), seed=args.seed, denoise_m=args.denoise_m)
        options = "".join(f" --{k.replace('_', '-')} {v:g}" for k, v in given.items() if v)
        pack(os.path.join(args.work, "model_fp32.safetensors"), os.path.join(args.work, "chips"), args.out, log, init,
             options)
        log(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
