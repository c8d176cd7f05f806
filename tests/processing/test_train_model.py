"""landform:trainmodel -> landform:classifylandforms -> landform:evaluate inside real (headless) QGIS.

Labels are derived by the plugin's rule-based classifier (core.rules) from the DEM itself: a
stand-in for a user's landform map, not ground truth."""
import os

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from landform_plugin.core import modelfile, rasters


@pytest.fixture(scope="module")
def area(rule_area):
    return rule_area


def test_registered_with_help(landform_provider):
    alg = landform_provider.algorithm("trainmodel")
    assert alg.displayName() == "Train landform model"
    help_text = alg.shortHelpString()
    for needle in ("Yang", "1024", "1 + 1/share", "Nothing is downloaded", "Fig. 5", "python -m landform_plugin.core train"):
        assert needle in help_text
    assert alg.parameterDefinition("EPOCHS").defaultValue() == 50
    assert alg.parameterDefinition("LR").defaultValue() == pytest.approx(1e-5)
    assert alg.parameterDefinition("HOLD_EPOCHS").defaultValue() == 20
    assert alg.parameterDefinition("CHIP_SIZE").defaultValue() == 1024
    assert alg.parameterDefinition("BUFFER").defaultValue() == 5
    outs = {o.name() for o in alg.outputDefinitions()}
    assert {"OUTPUT", "LOG_CSV", "CURVE_PNG", "CONFUSION_CSV", "CONFUSION_PNG", "VAL_PA", "VAL_MIOU", "CHIPS"} <= outs


def test_train_classify_evaluate_chain(run_alg, area, tmp_path):
    model = str(tmp_path / "m.safetensors")
    res = run_alg("trainmodel", {
        "DEMS": [area["dem"]], "LABELS": area["labels"], "CHIP_SIZE": 64, "ARCHITECTURE": 7,  # FCN-ResNet18
        "EPOCHS": 2, "HOLD_EPOCHS": 2, "LR": 1e-3, "WEIGHT_CAP": 10, "VAL_FRACTION": 0.25,
        "CHIPS": str(tmp_path / "chips"), "DEVICE": 1, "OUTPUT": model,
    })
    assert res["OUTPUT"] == model and os.path.isfile(model)
    assert res["CHIP_COUNT"] == 16 and os.path.isfile(os.path.join(res["CHIPS"], "manifest.json"))
    assert 0 <= res["VAL_PA"] <= 100 and 0 <= res["VAL_MIOU"] <= 100
    for k in ("LOG_CSV", "CURVE_PNG", "CONFUSION_CSV", "CONFUSION_PNG"):
        assert os.path.isfile(res[k]), k
    spec = modelfile.read_spec(model)
    assert spec["backbone"] == "resnet18" and spec["training"]["epochs_done"] == 2
    assert spec["metrics"]["val_pa"] == pytest.approx(res["VAL_PA"], abs=0.01)

    classes = str(tmp_path / "classes.tif")
    run_alg("classifylandforms", {"INPUT": area["dem"], "MODEL": model, "TILE_SIZE": 128, "DEVICE": 1,
                                  "OUTPUT": classes, "CONFIDENCE": "TEMPORARY_OUTPUT"})
    got = rasters.read_array(classes)
    assert got.shape == (256, 256) and set(np.unique(got)) <= {1, 2, 3, 4}

    report = str(tmp_path / "report.html")
    ev = run_alg("evaluate", {"INPUT": classes, "REFERENCE": area["labels"], "OUTPUT": report,
                              "CONFUSION_CSV": str(tmp_path / "cm.csv"), "CONFUSION_PNG": str(tmp_path / "cm.png")})
    ref = rasters.read_array(area["labels"])
    assert ev["PA"] == pytest.approx(100 * np.mean(got == ref), abs=1e-3)
    assert 0 < ev["MIOU"] <= 100 and ev["PIXELS"] == 256 * 256
    assert "PA " in open(report).read() and open(ev["CONFUSION_PNG"], "rb").read(4) == b"\x89PNG"


def test_bad_input_is_a_clear_error(run_alg, area, tmp_path):
    with pytest.raises(QgsProcessingException, match=r"chip size \(1024 px\) is larger than the DEM"):
        run_alg("trainmodel", {"DEMS": [area["dem"]], "LABELS": area["labels"], "OUTPUT": str(tmp_path / "m.safetensors")})
    with pytest.raises(QgsProcessingException, match="Too few chips for a validation split"):
        run_alg("trainmodel", {"DEMS": [area["dem"]], "LABELS": area["labels"], "CHIP_SIZE": 256,
                               "OUTPUT": str(tmp_path / "m.safetensors")})
    assert not os.path.exists(tmp_path / "m.safetensors")
