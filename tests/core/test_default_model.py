"""The bundled default model: present in a fresh clone, small, and sensible on real terrain.

Both DEMs used here were held out of its training (tools/train_default_model.py,
HOLDOUT_DEMS): the San Gabriel Mountains (Big Tujunga) and the Fort Worth prairie.
"""
import os

import numpy as np
import pytest
from osgeo import gdal

from landform_plugin.core import labels, modelfile, rasters
from tests.geotiff import write_geotiff

MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "models", "default_model.safetensors")


def test_model_file_is_tracked_small_and_described(repo_root):
    path = repo_root / "models" / "default_model.safetensors"
    assert path.is_file(), "models/default_model.safetensors must ship with the repository"
    assert path.stat().st_size <= 50 * 1024 * 1024
    spec = modelfile.read_spec(str(path))  # no torch needed
    assert spec["pixel_size_m"] == pytest.approx(90.0)
    assert spec["input_factors"] == ["dem", "rdls", "slope"]
    assert [c["name"] for c in spec["classes"]] == labels.CLASS_NAMES
    assert spec["training"]["label_source"].startswith("rule-derived")
    held = set(spec["training"]["held_out_dems"])
    assert {"bigtujunga", "fortworth", "zion"} <= held
    assert not held & set(spec["training"]["train_dems"])
    assert (repo_root / "models" / "README.md").is_file()


@pytest.fixture(scope="module")
def predictor():
    from landform_plugin.core import predict

    return predict.Predictor.from_file(MODEL, "cpu")


def _classify(dem, tmp_path, predictor, name):
    from landform_plugin.core import predict

    out = str(tmp_path / f"{name}.tif")
    conf = str(tmp_path / f"{name}_conf.tif")
    res = predict.classify_raster(dem, MODEL, out, conf, device="cpu", predictor=predictor)
    return rasters.read_array(out), res, out, conf


def test_mountain_range_is_mostly_mountain(dems, tmp_path, predictor):
    cls, res, out, conf = _classify(dems["bigtujunga"], tmp_path, predictor, "bigtujunga")
    valid = cls > 0
    assert np.mean(cls[valid] == 4) > 0.8, res["class_shares"]
    assert np.mean(cls[valid] == 1) < 0.05
    src, ds = gdal.Open(dems["bigtujunga"]), gdal.Open(out)
    assert (ds.RasterXSize, ds.RasterYSize) == (src.RasterXSize, src.RasterYSize)
    assert ds.GetGeoTransform() == pytest.approx(src.GetGeoTransform())
    c = gdal.Open(conf)
    top = c.GetRasterBand(c.RasterCount).ReadAsArray()
    assert np.all((top[valid] > 0.2) & (top[valid] <= 1.0 + 1e-6))


def test_prairie_is_mostly_plain(dems, tmp_path, predictor):
    cls, res, _, _ = _classify(dems["fortworth"], tmp_path, predictor, "fortworth")
    valid = cls > 0
    assert np.mean(cls[valid] == 1) > 0.5, res["class_shares"]
    assert np.mean(cls[valid] == 4) < 0.02


def test_zion_plateaus_hold_platform_and_mountain(dems, tmp_path, predictor):
    cls, res, _, _ = _classify(dems["zion"], tmp_path, predictor, "zion")
    valid = cls > 0
    assert np.mean(cls[valid] == 2) > 0.02, res["class_shares"]
    assert np.mean(cls[valid] == 4) > 0.4


def test_default_model_keeps_its_classes_under_noise_far_better_than_the_rules(repo_root, dems, tmp_path):
    """The bundled model was fine-tuned on noisy, holed and cut copies of its training DEMs with
    the clean DEMs' labels, and says so. Under 10 m of noise on the held-out prairie, where the
    rules' 30 m relief threshold sits in the noise (bench/robustness.py: 79 % of the rules' cells
    change, 17 % of the model's), the model must change less than half as many cells as the rules."""
    from landform_plugin.core import perturb, predict, rules

    training = modelfile.read_spec(MODEL)["training"]
    assert training["label_source"].startswith("rule-derived") and "clean DEM" in training["robust_recipe"]
    assert "noisy, holed and cut" in (repo_root / "models" / "README.md").read_text()

    ds = gdal.Open(str(dems["fortworth"]))
    z = ds.GetRasterBand(1).ReadAsArray().astype(np.float32)
    nd = ds.GetRasterBand(1).GetNoDataValue()
    if nd is not None:
        z[z == nd] = np.nan
    noisy = write_geotiff(tmp_path / "noisy.tif", perturb.gaussian_noise(z, 10.0, np.random.default_rng(0)),
                          nodata=float("nan"), gt=ds.GetGeoTransform(), crs_wkt=ds.GetProjection())
    p = predict.Predictor.from_file(MODEL, "cpu")
    changed = {}
    for name in ("model", "rules"):
        maps = []
        for tag, dem in (("clean", str(dems["fortworth"])), ("noisy", noisy)):
            path = str(tmp_path / f"{name}_{tag}.tif")
            if name == "model":
                predict.classify_raster(dem, MODEL, path, None, device="cpu", predictor=p)
            else:
                rules.classify_raster(dem, path)
            maps.append(rasters.read_array(path))
        valid = (maps[0] > 0) & (maps[1] > 0)
        assert valid.mean() > 0.9
        changed[name] = float((maps[0][valid] != maps[1][valid]).mean())
    assert changed["model"] < 0.5 * changed["rules"], changed
