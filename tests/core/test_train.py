"""Training from a chip folder: the paper's recipe pieces, a short real run, resume, bad input.

Labels are rule-derived (relief classes, see test_chips.relief_labels), not a landform map."""
import csv
import os

import numpy as np
import pytest

from landform_plugin.core import chips, modelfile, train
from landform_plugin.core.errors import Cancelled, LandformError
from landform_plugin.core.progress import Progress

from .test_chips import relief_labels, subset


def test_paper_schedule_weights_and_split():
    lrs = [train.lr_at(e, 1e-5, 20, 50) for e in range(50)]
    assert lrs[:20] == [1e-5] * 20
    assert lrs[20] == pytest.approx(1e-5) and lrs[35] == pytest.approx(1e-5 * 15 / 30)
    assert lrs[49] == pytest.approx(1e-5 / 30) and train.lr_at(50, 1e-5, 20, 50) == 0.0
    assert np.all(np.diff(lrs[20:]) < 0)
    # the paper's Table 1 shares -> w = 1 + 1/share, no data fixed at 1
    shares = np.array([1.60, 28.48, 10.52, 20.14, 39.26])
    w = train.paper_class_weights(shares * 1000)
    np.testing.assert_allclose(w, [1.0, 1 + 100 / 28.48, 1 + 100 / 10.52, 1 + 100 / 20.14, 1 + 100 / 39.26])
    np.testing.assert_allclose(train.paper_class_weights([10, 90, 0, 3, 897], cap=20), [1, 1 + 1000 / 90, 1, 20, 1 + 1000 / 897])
    tr, va = train.split_chips(10, 0.2, seed=3)
    assert len(tr) == 8 and len(va) == 2 and not set(tr) & set(va)
    assert train.split_chips(10, 0.2, seed=3) == (tr, va)
    with pytest.raises(LandformError, match="Too few chips for a validation split"):
        train.split_chips(2, 0.2, seed=0)
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    y = (np.arange(16).reshape(4, 4) % 5).astype(np.uint8)
    xa, ya = train.augment_pair(x, y, np.random.default_rng(1))
    # the label moves with the input: pixel (i, j) keeps its value pair
    pairs = {(float(a), int(b)) for a, b in zip(x[0].ravel(), y.ravel())}
    assert {(float(a), int(b)) for a, b in zip(xa[0].ravel(), ya.ravel())} == pairs


@pytest.fixture(scope="module")
def chip_dir(dems, tmp_path_factory):
    d = tmp_path_factory.mktemp("train_chips")
    dem = subset(dems["bigtujunga"], d / "dem.tif", 500, 100, 256, 256)
    lab = relief_labels(dem, d / "labels.tif")
    assert np.count_nonzero(np.bincount(lab.ravel())) >= 2
    chips.export_chips(chips.ChipConfig(dems=[dem], labels=str(d / "labels.tif"), out_dir=str(d / "chips"),
                                        chip_size=64, min_labelled=0.0))
    return str(d / "chips")


@pytest.mark.slow
def test_short_run_lowers_loss_writes_model_and_resumes(chip_dir, tmp_path):
    out = str(tmp_path / "m.safetensors")
    cfg = train.TrainConfig(chips=chip_dir, out=out, architecture="fcn_resnet18", epochs=4, hold_epochs=4,
                            lr=1e-3, batch_size=4, val_fraction=0.25, weight_cap=10, seed=1, threads=2,
                            checkpoint_every_epoch=False)  # checkpoints are exercised by the cancel/resume below
    messages = []
    res = train.train(cfg, Progress(log=messages.append))
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 4 and res.iterations == 4 * 3  # 12 training chips, batch 4
    assert losses[-1] < 0.8 * losses[0], losses
    spec = modelfile.read_spec(out)
    assert (spec["architecture"], spec["backbone"], spec["input_factors"]) == ("fcn_resnet", "resnet18", ["dem"])
    assert spec["pixel_size_m"] == 30.0 and spec["tile_size"] == 64
    assert spec["training"]["train_chips"] == 12 and spec["training"]["val_chips"] == 4
    assert spec["training"]["class_weights"][0] == 1.0 and max(spec["training"]["class_weights"]) <= 10
    assert spec["metrics"]["val_pa"] == pytest.approx(100 * res.val_scores.pa, abs=0.01)
    assert spec["metrics"]["validation"]["confusion_matrix"] == res.val_scores.confusion.tolist()
    assert res.val_scores.total == 4 * 64 * 64
    model, _ = modelfile.load_model(out)
    rows = list(csv.DictReader(open(res.files["log_csv"])))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0]["train_loss"]) == pytest.approx(losses[0])
    for k in ("curve_png", "confusion_png"):
        assert open(res.files[k], "rb").read(4) == b"\x89PNG"
    assert open(res.files["confusion_csv"]).readline().startswith("reference")
    assert any("epoch 4/4" in m for m in messages)

    # cancel during epoch 2: epoch 1 stays as checkpoint, no model file, then resume to the end
    out2 = str(tmp_path / "r.safetensors")
    cfg2 = train.TrainConfig(**{**cfg.__dict__, "out": out2, "epochs": 2, "hold_epochs": 2, "checkpoint_every_epoch": True})
    calls = {"n": 0}

    def cancel_in_epoch_2():
        calls["n"] += 1
        return calls["n"] > 3 + 1 + 1  # 3 train batches + 1 val batch in epoch 1, then one more
    with pytest.raises(Cancelled, match="last completed epoch \\(1\\) is kept"):
        train.train(cfg2, Progress(is_cancelled=cancel_in_epoch_2))
    ckpt = out2.replace(".safetensors", ".checkpoint.safetensors")
    assert os.path.exists(ckpt) and not os.path.exists(out2)
    res2 = train.train(train.TrainConfig(**{**cfg2.__dict__, "resume": "auto"}))
    assert [h["epoch"] for h in res2.history] == [1, 2] and res2.iterations == 6
    assert not os.path.exists(ckpt)  # finished: the model file holds everything
    # deterministic: the resumed run's epoch 2 equals epoch 2 of the uninterrupted first run
    # (same seed, split, batch order and learning rate)
    for key in ("train_loss", "val_loss", "val_pa"):
        assert res2.history[1][key] == pytest.approx(res.history[1][key], rel=1e-4), key


def test_limits_and_bad_input(chip_dir, tmp_path):
    res = train.train(train.TrainConfig(chips=chip_dir, out=str(tmp_path / "m.safetensors"), architecture="fcn_resnet18",
                                        epochs=50, max_iterations=2, batch_size=2, threads=2))
    assert res.iterations == 2 and res.epochs_done == 1 and "max_iterations" in res.stopped_early
    assert os.path.exists(res.files["checkpoint"])  # stopped early: resumable
    with pytest.raises(LandformError, match="end in .safetensors"):
        train.train(train.TrainConfig(chips=chip_dir, out=str(tmp_path / "m.pt")))
    with pytest.raises(LandformError, match="Too few chips"):
        train.train(train.TrainConfig(chips=chip_dir, out=str(tmp_path / "x.safetensors"), val_fraction=0.01))
    with pytest.raises(LandformError, match="not a chip folder"):
        train.train(train.TrainConfig(chips=str(tmp_path), out=str(tmp_path / "x.safetensors")))


def test_cli_trains_without_gdal_or_qgis(chip_dir, tmp_path, repo_root):
    """The GPU-box path: 'python -m landform_plugin.core train' with osgeo and qgis unimportable."""
    import subprocess
    import sys

    out = str(tmp_path / "cli.safetensors")
    script = (
        "import sys; sys.modules['osgeo'] = None; sys.modules['qgis'] = None\n"
        "from landform_plugin.core.__main__ import main\n"
        f"rc = main(['train', '--chips', {chip_dir!r}, '--out', {out!r}, '--architecture', 'fcn_resnet18',"
        " '--epochs', '1', '--max-iterations', '1', '--batch-size', '2', '--threads', '2'])\n"
        "assert 'osgeo' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=str(repo_root), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"model: {out}" in proc.stdout
    assert modelfile.read_spec(out)["training"]["iterations"] == 1


def test_multichannel_per_factor_with_terrain_factors(dems, tmp_path):
    """DEM + slope, one encoder per factor (the paper's multichannel model), BatchNorm re-estimated."""
    dem = subset(dems["bigtujunga"], tmp_path / "dem.tif", 500, 100, 256, 128)
    relief_labels(dem, tmp_path / "labels.tif")
    m = chips.export_chips(chips.ChipConfig(dems=[dem], labels=str(tmp_path / "labels.tif"), out_dir=str(tmp_path / "c"),
                                            factors=["dem", "slope"], chip_size=64, min_labelled=0.0))
    assert m["in_channels"] == 2 and m["normalisation"]["slope"]["method"] == "affine"
    x = np.load(tmp_path / "c" / m["chips"][0]["x"])
    assert x.shape == (2, 64, 64) and np.isfinite(x).all() and x[1].min() >= 0  # slope / 45 deg
    out = str(tmp_path / "mc.safetensors")
    res = train.train(train.TrainConfig(chips=str(tmp_path / "c"), out=out, architecture="fcn_resnet18",
                                        multichannel="per_factor", epochs=1, max_iterations=2, val_fraction=0.25,
                                        bn_recalibrate=2, threads=2))
    spec = modelfile.read_spec(out)
    assert spec["multichannel"] == "per_factor" and spec["input_factors"] == ["dem", "slope"]
    assert spec["training"]["batch_size"] == 2  # the paper's batch for several factors
    assert spec["training"]["batchnorm_statistics"] == "re-estimated over 2 training batches"
    model, _ = modelfile.load_model(out)
    assert len(model.encoders) == 2
    assert res.val_scores.total == 2 * 64 * 64


def test_fine_tune_starts_from_the_model_file(chip_dir, tmp_path, repo_root):
    """init_model: the file's network and weights are the start (the architecture argument is
    ignored); a model with other input factors is refused."""
    from safetensors.numpy import load_file

    tiny = os.path.join(repo_root, "tests", "data", "models", "tiny_relief_60m.safetensors")
    out = str(tmp_path / "tuned.safetensors")
    messages = []
    res = train.train(train.TrainConfig(chips=chip_dir, out=out, architecture="unet", init_model=tiny, epochs=1,
                                        max_iterations=1, lr=1e-12, batch_size=2, threads=2),
                      Progress(log=messages.append))
    assert res.iterations == 1
    spec = modelfile.read_spec(out)
    assert (spec["architecture"], spec["backbone"]) == ("fcn_resnet", "resnet_tiny")
    assert spec["training"]["init_model"] == "tiny_relief_60m.safetensors"
    assert any("trained at 60 m" in m for m in messages)  # the chips are at 30 m
    before, after = load_file(tiny), load_file(out)
    assert set(before) == set(after)
    learnt = [k for k in before if "running_" not in k and "num_batches" not in k]
    assert learnt
    for k in learnt:  # a step at lr 1e-12 leaves the weights where the file had them
        np.testing.assert_allclose(after[k].astype(np.float32), before[k].astype(np.float32), atol=1e-6, err_msg=k)
    default = os.path.join(repo_root, "models", "default_model.safetensors")
    with pytest.raises(LandformError, match="expects input factors"):
        train.train(train.TrainConfig(chips=chip_dir, out=str(tmp_path / "x.safetensors"), init_model=default))


def test_fine_tuning_onto_denoised_chips_keeps_their_rule_and_classification_applies_it(dems, tmp_path, repo_root):
    """Chips exported with DENOISE carry the rule; a model without it may be fine-tuned on them
    (it says so) and its new file holds the chips' rule; classification then denoises the DEM:
    the same weights without the rule give other probabilities."""
    from landform_plugin.core import inputs, predict

    dem = subset(dems["bigtujunga"], tmp_path / "dem.tif", 500, 100, 256, 128)
    relief_labels(dem, tmp_path / "labels.tif")
    m = chips.export_chips(chips.ChipConfig(dems=[dem], labels=str(tmp_path / "labels.tif"), out_dir=str(tmp_path / "c"),
                                            chip_size=64, min_labelled=0.0, denoise_m=60.0))
    assert m["normalisation"][inputs.DENOISE] == {"method": "gaussian", "sigma_m": 60.0}
    tiny = os.path.join(repo_root, "tests", "data", "models", "tiny_relief_60m.safetensors")
    out, messages = str(tmp_path / "tuned.safetensors"), []
    train.train(train.TrainConfig(chips=str(tmp_path / "c"), out=out, init_model=tiny, epochs=1, max_iterations=1,
                                  batch_size=2, val_fraction=0.25, threads=2), Progress(log=messages.append))
    assert any("denoise the DEM as" in msg for msg in messages)
    model, spec = modelfile.load_model(out)
    assert spec["normalisation"][inputs.DENOISE]["sigma_m"] == 60.0
    plain = str(tmp_path / "plain.safetensors")
    modelfile.save_model(plain, model, dict(spec, normalisation={"dem": spec["normalisation"]["dem"]}))
    probs = {}
    for name, path in (("denoised", out), ("plain", plain)):
        conf = str(tmp_path / f"{name}_p.tif")
        predict.classify_raster(dem, path, str(tmp_path / f"{name}.tif"), conf, device="cpu", pixel_size_m=30.0)
        from osgeo import gdal

        probs[name] = gdal.Open(conf).ReadAsArray()
    assert probs["denoised"].shape == probs["plain"].shape
    assert np.abs(probs["denoised"] - probs["plain"]).max() > 1e-3


def test_view_consistency_loss_lines_up_views_and_penalises_stride_dependence():
    """A pointwise network gives the same probabilities whatever the view's offset, flip or
    rotation, so the term is zero only if the view is cut and turned back exactly; a strided
    one depends on the phase, and the term says so."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    x = torch.randn(2, 1, 64, 64)
    y = torch.randint(0, 5, (2, 64, 64))
    y[0, :10] = 255  # unlabelled rows do not count
    pointwise = nn.Sequential(nn.Conv2d(1, 8, 1), nn.ReLU(), nn.Conv2d(8, 5, 1))
    strided = nn.Sequential(nn.Conv2d(1, 8, 3, stride=4, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1),
                            nn.Upsample(scale_factor=4, mode="bilinear"))
    rng = np.random.default_rng(3)
    with torch.no_grad():
        flat = [float(train.view_consistency_loss(pointwise, x, y, pointwise(x), rng, shift=16)) for _ in range(16)]
        bumpy = [float(train.view_consistency_loss(strided, x, y, strided(x), rng, shift=16)) for _ in range(16)]
    assert max(flat) < 1e-6, flat
    assert min(bumpy) >= 0 and max(bumpy) > 1e-3, bumpy
    # the whole chip's prediction is the target: no gradient flows into it
    logits = pointwise(x)
    train.view_consistency_loss(strided, x, y, logits, rng, shift=16).backward()
    assert all(p.grad is None for p in pointwise.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in strided.parameters())


def test_consistency_weight_adds_to_the_loss_and_is_recorded(chip_dir, tmp_path):
    common = dict(chips=chip_dir, architecture="fcn_resnet18", epochs=1, max_iterations=1, batch_size=4,
                  seed=1, threads=2, checkpoint_every_epoch=False)
    plain = train.train(train.TrainConfig(out=str(tmp_path / "a.safetensors"), **common))
    steady = train.train(train.TrainConfig(out=str(tmp_path / "b.safetensors"), consistency=2.0, **common))
    # the same first batch and initial weights: the cross-entropy is equal, the sum is larger
    assert steady.history[0]["train_loss"] > plain.history[0]["train_loss"] + 1e-4
    assert modelfile.read_spec(steady.model_path)["training"]["consistency"] == 2.0
