"""landform:rulebasedlandforms inside real (headless) QGIS."""
import numpy as np
import pytest
from osgeo import gdal

from landform_plugin.core import labels, rasters, rules


def test_registered_with_help(landform_provider):
    alg = landform_provider.algorithm("rulebasedlandforms")
    assert alg is not None
    assert alg.displayName() == "Rule-based landform classification"
    help_text = alg.shortHelpString()
    for needle in ("Cheng", "Yang", "30 m", "200 m", "2-5 km", "Platform", "1414"):
        assert needle in help_text
    names = {p.name() for p in alg.parameterDefinitions()}
    assert {"INPUT", "BAND", "LOCAL_WINDOW", "PLAIN_RELIEF", "HILL_RELIEF", "PLATFORM_HEIGHT", "OUTPUT"} <= names
    assert alg.parameterDefinition("LOCAL_WINDOW").defaultValue() == pytest.approx(1414.0)
    assert [o.name() for o in alg.outputDefinitions()] == ["OUTPUT"]


def test_runs_like_the_core(run_alg, dems, tmp_path):
    out = str(tmp_path / "rules.tif")
    res = run_alg("rulebasedlandforms", {"INPUT": dems["zion"], "BAND": 1, "OUTPUT": out})
    assert res["OUTPUT"] == out
    ref = str(tmp_path / "ref.tif")
    rules.classify_raster(dems["zion"], ref)
    got = rasters.read_array(out)
    np.testing.assert_array_equal(got, rasters.read_array(ref))
    assert np.mean(got == rules.PLATFORM) > 0.03
    ds = gdal.Open(out)
    assert ds.GetGeoTransform() == pytest.approx(gdal.Open(dems["zion"]).GetGeoTransform())
    assert ds.GetRasterBand(1).GetNoDataValue() == 0
    assert ds.GetRasterBand(1).GetRasterColorTable().GetColorEntry(4)[:3] == labels.DEFAULT_CLASSES[4].color


def test_parameters_reach_the_rules(run_alg, dems, tmp_path):
    out = str(tmp_path / "p.tif")
    run_alg("rulebasedlandforms", {"INPUT": dems["bigtujunga"], "PLATFORM": False, "SPLIT_MOUNTAINS": True,
                                   "HILL_RELIEF": 300.0, "OUTPUT": out})
    got = rasters.read_array(out)
    assert not np.any(got == rules.PLATFORM)
    assert np.any(got == 5)
    ref = str(tmp_path / "r.tif")
    rules.classify_raster(dems["bigtujunga"], ref, rules.RuleParams(platform=False, split_mountains=True,
                                                                     hill_max_relief_m=300.0))
    np.testing.assert_array_equal(got, rasters.read_array(ref))


def test_bad_thresholds_give_a_message(run_alg, dems, tmp_path):
    from qgis.core import QgsProcessingException

    out = tmp_path / "bad.tif"
    with pytest.raises(QgsProcessingException, match="must not exceed"):
        run_alg("rulebasedlandforms", {"INPUT": dems["fortworth"], "PLAIN_RELIEF": 500.0, "OUTPUT": str(out)})
    assert not out.exists()


def test_default_model_is_used_without_a_model_file_and_agrees_with_the_rules(run_alg, dems, tmp_path):
    """'Classify Landforms from DEM' with no model file runs the bundled default model
    (trained on rule labels; Fort Worth was held out of its training)."""
    res = run_alg("classifylandforms", {"INPUT": dems["fortworth"], "MODEL": "", "DEVICE": 1,
                                        "OUTPUT": str(tmp_path / "net.tif"), "CONFIDENCE": str(tmp_path / "conf.tif")})
    assert "default" in res["MODEL_INFO"].lower() or "resnet18" in res["MODEL_INFO"]
    run_alg("rulebasedlandforms", {"INPUT": dems["fortworth"], "OUTPUT": str(tmp_path / "rules.tif")})
    net, ref = rasters.read_array(res["OUTPUT"]), rasters.read_array(str(tmp_path / "rules.tif"))
    valid = ref > 0
    np.testing.assert_array_equal(net > 0, valid)
    assert np.mean(net[valid] == ref[valid]) > 0.7
    assert np.mean(net[valid] == rules.PLAIN) > 0.5
