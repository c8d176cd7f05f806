"""The probabilities' low-pass (classification's SMOOTHING option): a Gaussian of the asked width,
mass-preserving, independent of where a window starts on the lattice, and steadier maps on real
terrain with the bundled model."""
import os

import numpy as np
import pytest

from landform_plugin.core import rasters
from landform_plugin.core.smoothing import reach_cells, smooth_probabilities
from tests.geotiff import write_geotiff

MODEL = os.path.join(os.path.dirname(__file__), "..", "..", "models", "default_model.safetensors")


def _field(c, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((c, h, w)).astype(np.float32)


def test_zero_sigma_and_band_zero_are_left_alone():
    p = _field(5, 64, 64)
    assert smooth_probabilities(p.copy(), 0.0, (3, 5)) == pytest.approx(p)
    q = smooth_probabilities(p.copy(), 5.0, (3, 5))
    assert np.array_equal(q[0], p[0])  # "no data" is set aside by finalise, not smoothed
    assert np.abs(q[1:] - p[1:]).max() > 0.1


def test_constant_stays_constant_and_an_impulse_spreads_as_a_gaussian_of_sigma():
    p = np.full((3, 96, 96), 0.25, np.float32)
    assert np.abs(smooth_probabilities(p.copy(), 5.0, (0, 0)) - 0.25).max() < 1e-6
    for sigma in (2.0, 5.0, 8.0):
        imp = np.zeros((2, 128, 128), np.float32)
        imp[1, 64, 64] = 1.0
        out = smooth_probabilities(imp, sigma, (0, 0))[1]
        assert out.sum() == pytest.approx(1.0, abs=1e-4)  # mass kept (far from the window's edges)
        ys, xs = np.mgrid[:128, :128]
        var_x = (out * (xs - (out * xs).sum()) ** 2).sum()
        var_y = (out * (ys - (out * ys).sum()) ** 2).sum()
        # block averaging + bilinear interpolation stand in for part of the Gaussian: within 20 % of sigma^2
        assert var_x == pytest.approx(sigma ** 2, rel=0.2) and var_y == pytest.approx(sigma ** 2, rel=0.2), sigma
        assert np.abs(out - out.T).max() < 1e-5 * out.max()  # blocks on the lattice: symmetric about the cell


@pytest.mark.parametrize("dx,dy", [(1, 0), (3, 2), (4, 4), (7, 13)])
def test_a_cell_gets_the_same_value_whatever_window_holds_it(dx, dy):
    """Blocks sit on the global lattice: a window starting (dx, dy) cells later, at any phase of the
    blocks, gives its cells the same smoothed values as the larger window, away from both edges."""
    sigma = 5.0
    big = _field(5, 200, 220, seed=1)
    ox, oy = 1000 + 2, 3000 + 1  # not on a block boundary
    a = smooth_probabilities(big.copy(), sigma, (ox, oy))
    sub = big[:, dy:, dx:].copy()
    b = smooth_probabilities(sub, sigma, (ox + dx, oy + dy))
    r = reach_cells(sigma)
    inner = (slice(None), slice(r, -r), slice(r, -r))
    assert np.abs(a[:, dy:, dx:][inner] - b[inner]).max() < 1e-5


def test_smoothing_steadies_the_bundled_model_under_a_one_cell_shift(dems, tmp_path):
    """Zion (held out of training) on the model's 90 m lattice: the DEM moved by one cell and the
    map moved back changes fewer classes with smoothing than without (bench/robustness.py measures
    it over six DEMs), and the smoothed map still holds the same landforms."""
    from osgeo import gdal

    from landform_plugin.core import chips, predict

    ds = gdal.Translate(str(tmp_path / "zion90.tif"), chips.chip_grid(dems["zion"], 90.0).ds, format="GTiff")
    z = ds.GetRasterBand(1).ReadAsArray().astype(np.float32)
    nd = ds.GetRasterBand(1).GetNoDataValue()
    if nd is not None:
        z[z == nd] = np.nan
    kw = dict(nodata=float("nan"), gt=ds.GetGeoTransform(), crs_wkt=ds.GetProjection())
    paths = {"base": write_geotiff(tmp_path / "base.tif", z, **kw),
             "shifted": write_geotiff(tmp_path / "shifted.tif", np.roll(z, (1, 1), axis=(0, 1)), **kw)}
    p = predict.Predictor.from_file(MODEL, "cpu")
    maps = {}
    for sigma in (0.0, 5.0):
        for name, dem in paths.items():
            out = str(tmp_path / f"{name}_{sigma:g}.tif")
            predict.classify_raster(dem, MODEL, out, None, device="cpu", predictor=p, smoothing=sigma)
            m = rasters.read_array(out)
            maps[name, sigma] = np.roll(m, (-1, -1), axis=(0, 1)) if name == "shifted" else m
    changed = {}
    for sigma in (0.0, 5.0):
        a, b = maps["base", sigma][2:-2, 2:-2], maps["shifted", sigma][2:-2, 2:-2]
        valid = (a > 0) & (b > 0)
        changed[sigma] = float((a[valid] != b[valid]).mean())
    same = (maps["base", 0.0] == maps["base", 5.0]).mean()
    print(f"one-cell shift: {100 * changed[0.0]:.2f} % of cells change unsmoothed, {100 * changed[5.0]:.2f} % "
          f"smoothed; smoothed = unsmoothed on {100 * same:.1f} %")
    assert changed[5.0] < 0.75 * changed[0.0], changed
    assert same > 0.9
