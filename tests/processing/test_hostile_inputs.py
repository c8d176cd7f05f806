"""Hostile inputs through processing.run, as a user would meet them in QGIS.

Every case must end in a QgsProcessingException whose text names the file and what to
do, shows no Python failure words, and leaves no output that looks complete (and no
temporary file). Broken files are made from the real DEM fixtures (tests/hostile.py);
full and read-only disks are small tmpfs mounts (the tests run as root; elsewhere those
cases skip, saying why)."""
import os

import pytest
import torch
from osgeo import gdal
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from .. import hostile


@pytest.fixture(scope="module")
def files(dems, rule_area, tmp_path_factory):
    """Good and broken inputs shared by the cases (read-only for them)."""
    d = tmp_path_factory.mktemp("hostile_in")
    labels = rule_area["labels"]
    return {
        "dem": rule_area["dem"],
        "labels": labels,
        "truncated": hostile.truncated(dems["fortworth"], d / "truncated.tif"),
        "truncated_labels": hostile.truncated(labels, d / "truncated_labels.tif"),
        "corrupt": hostile.corrupt_tiff(d / "corrupt.tif"),
        "empty": hostile.zero_bytes(d / "empty.tif"),
        "bad_polygons": hostile.corrupt_geojson(d / "polygons.geojson"),
        "model": _tiny_model(d / "tiny.safetensors"),
        "dir": d,
    }


def _tiny_model(path):
    from landform_plugin.core.modelfile import make_spec, save_model
    from landform_plugin.core.nets.registry import build_model

    torch.manual_seed(3)
    m = build_model("fcn_resnet", "resnet_tiny", 1, decoder_channels=32)
    save_model(str(path), m, make_spec("fcn_resnet", "resnet_tiny", ["dem"], 60.0, 128, arch_options={"decoder_channels": 32}))
    return str(path)


@pytest.fixture(scope="module")
def wrong_model(files):
    return hostile.wrong_shape_model(files["model"], str(files["dir"] / "wrong_shape.safetensors"))


def _classify(dem, model, out_dir, **extra):
    p = {"INPUT": dem, "MODEL": model, "TILE_SIZE": 128, "DEVICE": 1,
         "OUTPUT": os.path.join(out_dir, "classes.tif"), "CONFIDENCE": os.path.join(out_dir, "confidence.tif")}
    p.update(extra)
    return p


def _train(dem, labels, out_dir, **extra):
    p = {"DEMS": [dem], "LABELS": labels, "CHIP_SIZE": 64, "ARCHITECTURE": 7, "EPOCHS": 1, "HOLD_EPOCHS": 1,
         "VAL_FRACTION": 0.25, "DEVICE": 1, "CHIPS": os.path.join(out_dir, "chips"),
         "OUTPUT": os.path.join(out_dir, "m.safetensors")}
    p.update(extra)
    return p


def _evaluate(classified, reference, out_dir, **extra):
    p = {"INPUT": classified, "REFERENCE": reference, "OUTPUT": os.path.join(out_dir, "report.html"),
         "CONFUSION_CSV": os.path.join(out_dir, "cm.csv"), "CONFUSION_PNG": os.path.join(out_dir, "cm.png")}
    p.update(extra)
    return p


TF_OUT = ("slope.tif", "rdls.tif", "corr.csv")
CLS_OUT = ("classes.tif", "confidence.tif")
EV_OUT = ("report.html", "cm.csv", "cm.png")
TR_OUT = ("m.safetensors", "m_training.csv", "m_val_confusion.csv", "m_training.png")


def _tf(dem, out_dir, **extra):
    p = {"INPUT": dem, "SLOPE": os.path.join(out_dir, "slope.tif"), "RDLS": os.path.join(out_dir, "rdls.tif"),
         "HILLSHADE": None, "CURVATURE": None, "CORRELATION": os.path.join(out_dir, "corr.csv")}
    p.update(extra)
    return p


def _rules(dem, out_dir, **extra):
    p = {"INPUT": dem, "OUTPUT": os.path.join(out_dir, "rules.tif")}
    p.update(extra)
    return p


# id: (algorithm, parameters(files, out_dir, wrong_model), words the message must hold, outputs that must not exist)
CASES = {
    "terrainfactors-truncated-dem": ("terrainfactors", lambda f, o, w: _tf(f["truncated"], o),
                                     ["truncated.tif", "export or download it again"], TF_OUT),
    "terrainfactors-corrupt-dem": ("terrainfactors", lambda f, o, w: _tf(f["corrupt"], o),
                                   ["corrupt.tif", "gdalinfo"], TF_OUT),
    "terrainfactors-zero-byte-dem": ("terrainfactors", lambda f, o, w: _tf(f["empty"], o),
                                     ["empty.tif", "0 bytes"], TF_OUT),
    "terrainfactors-missing-dem": ("terrainfactors", lambda f, o, w: _tf(os.path.join(o, "nowhere.tif"), o),
                                   ["nowhere.tif", "does not exist"], TF_OUT),
    "terrainfactors-output-folder-is-a-file": ("terrainfactors", lambda f, o, w: _tf(
        f["dem"], o, SLOPE=os.path.join(hostile.a_file(os.path.join(o, "afile")), "slope.tif")),
        ["afile", "is a file, not a folder"], TF_OUT),
    "terrainfactors-correlation-folder-is-a-file": ("terrainfactors", lambda f, o, w: _tf(
        f["dem"], o, CORRELATION=os.path.join(hostile.a_file(os.path.join(o, "afile")), "corr.csv")),
        ["afile", "is a file, not a folder"], TF_OUT),
    "terrainfactors-output-is-the-input": ("terrainfactors", lambda f, o, w: _tf(
        _copy(f["dem"], o), o, SLOPE=os.path.join(o, "input.tif")), ["input.tif", "is also an input"], ("rdls.tif", "corr.csv")),
    "terrainfactors-output-under-proc": ("terrainfactors", lambda f, o, w: _tf(
        f["dem"], o, SLOPE="/proc/landform_hostile/slope.tif"), ["/proc/landform_hostile", "choose a folder you can write to"], TF_OUT),
    "rulebasedlandforms-truncated-dem": ("rulebasedlandforms", lambda f, o, w: _rules(f["truncated"], o),
                                         ["truncated.tif", "export or download it again"], ("rules.tif",)),
    "rulebasedlandforms-zero-byte-dem": ("rulebasedlandforms", lambda f, o, w: _rules(f["empty"], o),
                                         ["empty.tif", "0 bytes"], ("rules.tif",)),
    "rulebasedlandforms-output-folder-is-a-file": ("rulebasedlandforms", lambda f, o, w: _rules(
        f["dem"], o, OUTPUT=os.path.join(hostile.a_file(os.path.join(o, "afile")), "sub", "rules.tif")),
        ["afile", "is a file, not a folder"], ("rules.tif",)),
    "rulebasedlandforms-output-is-the-input": ("rulebasedlandforms", lambda f, o, w: _rules(
        _copy(f["dem"], o), o, OUTPUT=os.path.join(o, "input.tif")), ["input.tif", "is also an input"], ("rules.tif",)),
    "classifylandforms-truncated-dem": ("classifylandforms", lambda f, o, w: _classify(f["truncated"], f["model"], o),
                                        ["truncated.tif", "export or download it again"], CLS_OUT),
    "classifylandforms-corrupt-dem": ("classifylandforms", lambda f, o, w: _classify(f["corrupt"], f["model"], o),
                                      ["corrupt.tif", "gdalinfo"], CLS_OUT),
    "classifylandforms-output-folder-is-a-file": ("classifylandforms", lambda f, o, w: _classify(
        f["dem"], f["model"], o, OUTPUT=os.path.join(hostile.a_file(os.path.join(o, "afile")), "classes.tif")),
        ["afile", "is a file, not a folder"], CLS_OUT),
    "classifylandforms-confidence-is-the-input": ("classifylandforms", lambda f, o, w: _classify(
        _copy(f["dem"], o), f["model"], o, CONFIDENCE=os.path.join(o, "input.tif")),
        ["input.tif", "is also an input"], ("classes.tif",)),
    "classifylandforms-wrong-shape-model": ("classifylandforms", lambda f, o, w: _classify(f["dem"], w, o),
                                            ["wrong_shape.safetensors", "does not match"], CLS_OUT),
    "classifylandforms-corrupt-model": ("classifylandforms", lambda f, o, w: _classify(
        f["dem"], hostile.corrupt_tiff(os.path.join(o, "garbage.safetensors")), o),
        ["garbage.safetensors"], CLS_OUT),
    "evaluate-truncated-classified": ("evaluate", lambda f, o, w: _evaluate(f["truncated_labels"], f["labels"], o),
                                      ["truncated_labels.tif", "export or download it again"], EV_OUT),
    "evaluate-truncated-reference": ("evaluate", lambda f, o, w: _evaluate(f["labels"], f["truncated_labels"], o),
                                     ["truncated_labels.tif", "export or download it again"], EV_OUT),
    "evaluate-corrupt-polygon-reference": ("evaluate", lambda f, o, w: _evaluate(
        f["labels"], f["bad_polygons"], o, REFERENCE_FIELD="code"), ["polygons.geojson"], EV_OUT),
    "evaluate-report-folder-is-a-file": ("evaluate", lambda f, o, w: _evaluate(
        f["labels"], f["labels"], o, CONFUSION_PNG=os.path.join(hostile.a_file(os.path.join(o, "afile")), "cm.png")),
        ["afile", "is a file, not a folder"], EV_OUT),
    "trainmodel-truncated-dem": ("trainmodel", lambda f, o, w: _train(f["truncated"], f["labels"], o),
                                 ["truncated.tif", "export or download it again"], TR_OUT + ("chips",)),
    "trainmodel-truncated-label-raster": ("trainmodel", lambda f, o, w: _train(f["dem"], f["truncated_labels"], o),
                                          ["truncated_labels.tif", "export or download it again"], TR_OUT + ("chips",)),
    "trainmodel-corrupt-polygon-labels": ("trainmodel", lambda f, o, w: _train(
        f["dem"], f["bad_polygons"], o, LABEL_FIELD="code"), ["polygons.geojson"], TR_OUT + ("chips",)),
    "trainmodel-model-folder-is-a-file": ("trainmodel", lambda f, o, w: _train(
        f["dem"], f["labels"], o, OUTPUT=os.path.join(hostile.a_file(os.path.join(o, "afile")), "m.safetensors")),
        ["afile", "is a file, not a folder"], TR_OUT + ("chips",)),
    "trainmodel-chip-folder-is-a-file": ("trainmodel", lambda f, o, w: _train(
        f["dem"], f["labels"], o, CHIPS=hostile.a_file(os.path.join(o, "chipfile"))),
        ["chipfile", "is a file"], TR_OUT),
}


def _copy(src, out_dir):
    dst = os.path.join(out_dir, "input.tif")
    gdal.Translate(dst, src)
    return dst


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_input_gives_a_clear_error(case, run_alg, files, wrong_model, tmp_path):
    alg, make, needles, outputs = CASES[case]
    out_dir = str(tmp_path / "out")
    os.makedirs(out_dir)
    params = make(files, out_dir, wrong_model)
    with pytest.raises(QgsProcessingException) as err:
        run_alg(alg, params)
    hostile.assert_clear(err.value, *needles)
    hostile.assert_nothing_complete(out_dir, *outputs)


def test_missing_output_folder_is_created(run_alg, files, tmp_path):
    """Decision: a missing output folder is created (as GDAL and QGIS's own algorithms do)."""
    out = tmp_path / "new" / "deeper" / "rules.tif"
    res = run_alg("rulebasedlandforms", {"INPUT": files["dem"], "OUTPUT": str(out)})
    assert res["OUTPUT"] == str(out) and out.is_file()


@pytest.mark.parametrize("alg", ["terrainfactors", "rulebasedlandforms", "evaluate", "classifylandforms"])
def test_read_only_folder(alg, run_alg, files, tmp_path):
    """A read-only mount: root ignores file modes, so only a real read-only filesystem tests this."""
    with hostile.tmpfs(tmp_path / "ro", read_only=True) as ro:
        make = {"terrainfactors": lambda: _tf(files["dem"], ro), "rulebasedlandforms": lambda: _rules(files["dem"], ro),
                "evaluate": lambda: _evaluate(files["labels"], files["labels"], ro),
                "classifylandforms": lambda: _classify(files["dem"], files["model"], ro)}[alg]
        with pytest.raises(QgsProcessingException) as err:
            run_alg(alg, make())
        hostile.assert_clear(err.value, ro, "not writable", "choose a folder you can write to")
        assert os.listdir(ro) == []


@pytest.mark.parametrize("alg", ["terrainfactors", "rulebasedlandforms", "evaluate"])
def test_full_disk(alg, run_alg, files, tmp_path):
    """A full 64 KiB filesystem: a clear 'disk is full', and no output kept."""
    with hostile.tmpfs(tmp_path / "full", size="64k") as full:
        hostile.fill(full)
        if alg == "terrainfactors":
            params, outs = _tf(files["dem"], full), TF_OUT
        elif alg == "rulebasedlandforms":
            params, outs = _rules(files["dem"], full), ("rules.tif",)
        else:
            params, outs = _evaluate(files["labels"], files["labels"], full), EV_OUT
        with pytest.raises(QgsProcessingException) as err:
            run_alg(alg, params)
        hostile.assert_clear(err.value, full, "disk is full")
        hostile.assert_nothing_complete(full, *outs)


@pytest.mark.parametrize("cancel_at, kept", [(30, None), (75, "m.checkpoint.safetensors")],
                         ids=["in-the-first-epoch", "after-an-epoch-keeps-only-the-checkpoint"])
def test_cancelled_training_leaves_no_model(cancel_at, kept, run_alg, files, tmp_path):
    """Cancelled: no model and no final reports; after a completed epoch only the resumable
    checkpoint stays, and the message says where it is."""
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p > cancel_at else None)
    out_dir = str(tmp_path / "out")
    with pytest.raises(QgsProcessingException) as err:
        run_alg("trainmodel", _train(files["dem"], files["labels"], out_dir, EPOCHS=3, HOLD_EPOCHS=3), feedback=feedback)
    hostile.assert_clear(err.value, "Cancelled", *([kept, "resume"] if kept else ["no epoch was completed"]))
    hostile.assert_nothing_complete(out_dir, "m.safetensors", "m_val_confusion.csv", "m_val_confusion.png", "m_training.png")
    assert os.path.exists(os.path.join(out_dir, kept)) if kept else not os.path.exists(os.path.join(out_dir, "m.checkpoint.safetensors"))
