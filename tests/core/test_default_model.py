"""The bundled default model: present in a fresh clone, small, and sensible on real terrain.

Both DEMs used here were held out of its training (tools/train_default_model.py,
HOLDOUT_DEMS): the San Gabriel Mountains (Big Tujunga) and the Fort Worth prairie.
"""
import os

import numpy as np
import pytest
from osgeo import gdal

from landform_plugin.core import labels, modelfile, rasters

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
