"""Rule-based landform classes (core.rules) on real DEMs.

What a geomorphologist would check: the Fort Worth prairie is mostly plain,
the San Gabriel Mountains (Big Tujunga) mostly mountain, the Zion plateaus hold
platform on their flat raised tops; each threshold moves the result the way
the help text says; outputs keep the DEM's grid, NoData and the class palette.
"""
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal, osr
from scipy import ndimage

from landform_plugin.core import labels, rasters, rules
from landform_plugin.core.errors import Cancelled, LandformError
from landform_plugin.core.progress import Progress


def _classify(dem, tmp_path, name="out.tif", **kw):
    out = str(tmp_path / name)
    res = rules.classify_raster(dem, out, rules.RuleParams(**kw))
    return rasters.read_array(out), res


def _dem_array(path):
    ds, info = rasters.open_raster(path)
    a = ds.GetRasterBand(1).ReadAsArray().astype(np.float32)
    if info.nodata is not None:
        a[a == np.float32(info.nodata)] = np.nan
    return a, info


# ----------------------------------------------------------------------------- kernels


def test_relief_ignores_nan_and_outside():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 100, size=(30, 30)).astype(np.float32)
    a[5:9, 10:20] = np.nan
    r = rules.relief(a, 7, 5)
    hi = ndimage.maximum_filter(np.where(np.isnan(a), -np.inf, a), size=(7, 5), mode="constant", cval=-np.inf)
    lo = ndimage.minimum_filter(np.where(np.isnan(a), np.inf, a), size=(7, 5), mode="constant", cval=np.inf)
    ref = hi - lo
    ok = np.isfinite(ref)
    np.testing.assert_allclose(r[ok], ref[ok])
    assert np.all(np.isnan(r[~ok]))


def test_window_percentile_matches_numpy():
    rng = np.random.default_rng(2)
    c = rng.uniform(0, 1000, size=(20, 25)).astype(np.float32)
    c[3:6, 4:9] = np.nan
    got = rules._window_percentile(c, 5, 7, 10.0)
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(c, (5, 7)).reshape(16, 19, 35)
    ref = np.nanpercentile(win, 10.0, axis=-1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_window_sizes_in_metres(dems):
    _, info = rasters.open_raster(dems["bigtujunga"])  # 30 m UTM
    wc = rules.window_cells(info, rules.RuleParams())
    assert wc.local == (47, 47)  # 1414 m / 30 m = 47.1
    assert wc.surface == (17, 17)
    assert wc.surround == (167, 167)
    _, info = rasters.open_raster(dems["fortworth"])  # 3" at 32.7 N: cells 78 m x 92 m
    wc = rules.window_cells(info, rules.RuleParams())
    assert wc.local == (15, 19)  # stays about 1.4 km in both directions
    assert abs(wc.local[0] * wc.cell_y_m - 1414) < wc.cell_y_m
    assert abs(wc.local[1] * wc.cell_x_m - 1414) < wc.cell_x_m


# ----------------------------------------------------------------------------- real terrain


def test_fortworth_prairie_is_mostly_plain(dems, tmp_path):
    cls, res = _classify(dems["fortworth"], tmp_path)
    valid = cls > 0
    plain = np.mean(cls[valid] == rules.PLAIN)
    assert plain > 0.5, res["shares"]
    assert np.mean(cls[valid] == rules.MOUNTAIN) < 0.01
    assert res["shares"]["Plain"] == pytest.approx(100 * plain, abs=0.01)


def test_san_gabriel_mountains_are_mostly_mountain(dems, tmp_path):
    cls, res = _classify(dems["bigtujunga"], tmp_path)
    valid = cls > 0
    assert np.mean(cls[valid] == rules.MOUNTAIN) > 0.85, res["shares"]
    assert np.mean(cls[valid] == rules.PLAIN) < 0.02


def test_zion_plateaus_contain_platform(dems, tmp_path):
    cls, res = _classify(dems["zion"], tmp_path)
    dem, _ = _dem_array(dems["zion"])
    platform = cls == rules.PLATFORM
    assert platform.mean() > 0.03, res["shares"]
    # Platforms are raised flat surfaces: flatter than mountains and above their 5 km neighbourhood.
    lab, n = ndimage.label(platform)
    sizes = np.bincount(lab.ravel())[1:]
    assert sizes.max() >= 200  # at least one plateau top of >= 200 cells (~1.4 km^2)
    above = dem - ndimage.uniform_filter(dem, size=(55, 67), mode="nearest")  # 5 km x 5 km mean
    assert np.median(above[platform]) > 10.0
    assert np.median(above[platform]) > np.median(above[cls == rules.MOUNTAIN]) + 10.0
    gy, gx = np.gradient(np.nan_to_num(dem), 92.5, 74.0)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    assert np.median(slope[platform]) < 0.5 * np.median(slope[cls == rules.MOUNTAIN])


def test_platform_needs_a_raised_flat_surface(dems, tmp_path):
    """Every platform cell satisfies both published conditions, recomputed independently."""
    cls, _ = _classify(dems["zion"], tmp_path)
    dem, info = _dem_array(dems["zion"])
    wc = rules.window_cells(info, rules.RuleParams())
    flat_relief = ndimage.maximum_filter(np.nan_to_num(dem, nan=-1e9), size=wc.surface, mode="nearest") - \
        ndimage.minimum_filter(np.nan_to_num(dem, nan=1e9), size=wc.surface, mode="nearest")
    platform = cls == rules.PLATFORM
    assert np.all(flat_relief[platform] < 30)
    # Raised: above the exact 10th percentile of the 5 km window by a clear margin on most cells
    # (the rule uses a cheaper percentile of cell means; it must agree closely).
    sub = dem[::4, ::4]
    p10 = ndimage.percentile_filter(sub, 10, size=(15, 17), mode="nearest")
    p10 = np.kron(p10, np.ones((4, 4)))[: dem.shape[0], : dem.shape[1]]
    assert np.mean((dem - p10)[platform] > 20) > 0.95


# ----------------------------------------------------------------------------- thresholds


def test_thresholds_move_the_classes_as_documented(dems, tmp_path):
    dem = dems["fortworth"]
    base, _ = _classify(dem, tmp_path, "a.tif", platform=False)
    assert not np.any(base == rules.PLATFORM)  # platform detection off: no class 2
    # A higher plain threshold only turns hills into plains.
    more_plain, _ = _classify(dem, tmp_path, "b.tif", platform=False, plain_max_relief_m=45.0)
    changed = base != more_plain
    assert changed.sum() > 0.1 * (base > 0).sum()
    assert np.all(base[changed] == rules.HILL) and np.all(more_plain[changed] == rules.PLAIN)

    dem = dems["jacksboro"]
    base, _ = _classify(dem, tmp_path, "c.tif", platform=False)
    fewer_mtn, _ = _classify(dem, tmp_path, "d.tif", platform=False, hill_max_relief_m=400.0)
    changed = base != fewer_mtn
    assert changed.any()
    assert np.all(base[changed] == rules.MOUNTAIN) and np.all(fewer_mtn[changed] == rules.HILL)
    # A smaller local window sees less relief: never a higher class.
    small, _ = _classify(dem, tmp_path, "e.tif", platform=False, local_window_m=900.0)
    order = np.array([0, 1, 2, 2, 3], dtype=np.int64)  # plain < hill < mountain
    assert np.all(order[small] <= order[base])
    assert np.mean(order[small] < order[base]) > 0.05


def test_platform_height_and_flatness(dems, tmp_path):
    dem = dems["zion"]
    base, _ = _classify(dem, tmp_path, "a.tif")
    higher, _ = _classify(dem, tmp_path, "b.tif", platform_height_m=150.0)
    p0, p1 = base == rules.PLATFORM, higher == rules.PLATFORM
    assert p1.sum() < p0.sum() and not np.any(p1 & ~p0)  # subset, smaller
    flatter, _ = _classify(dem, tmp_path, "c.tif", platform_flat_relief_m=15.0)
    p2 = flatter == rules.PLATFORM
    assert p2.sum() < p0.sum() and not np.any(p2 & ~p0)
    # Outside platform the relief classes are the same.
    np.testing.assert_array_equal(base[~p0], higher[~p0])


def test_split_mountains_refines_mountain_only(dems, tmp_path):
    dem = dems["bigtujunga"]
    merged, _ = _classify(dem, tmp_path, "a.tif")
    split, res = _classify(dem, tmp_path, "b.tif", split_mountains=True)
    np.testing.assert_array_equal(merged < rules.MOUNTAIN, split < rules.MOUNTAIN)
    np.testing.assert_array_equal(merged[merged < 4], split[split < 4])
    assert set(np.unique(split[merged == rules.MOUNTAIN])) <= {4, 5, 6, 7}
    # The San Gabriels: both 200-500 m and 500-1000 m relief in 2 km^2, never >= 2500 m.
    assert np.mean(split == 4) > 0.1 and np.mean(split == 5) > 0.1
    assert not np.any(split == 7)
    ds = gdal.Open(str(tmp_path / "b.tif"))
    band = ds.GetRasterBand(1)
    assert band.GetDescription() == "landform class (rules)"  # also makes GDAL 3.6 load the .aux.xml,
    names = band.GetCategoryNames()  # which GetCategoryNames alone does not trigger
    assert names[5].startswith("Middle relief mountain") and names[7].startswith("Highest relief")
    assert "Middle relief mountain (500-1000 m)" in res["shares"]


# ----------------------------------------------------------------------------- conventions


def test_output_geometry_palette_and_nodata(dems, tmp_path):
    dem = dems["luxembourg"]  # 46 % NoData, geographic
    cls, _ = _classify(dem, tmp_path)
    src = gdal.Open(dem)
    out = gdal.Open(str(tmp_path / "out.tif"))
    assert (out.RasterXSize, out.RasterYSize) == (src.RasterXSize, src.RasterYSize)
    assert out.GetGeoTransform() == pytest.approx(src.GetGeoTransform(), abs=1e-12)
    a, b = osr.SpatialReference(src.GetProjection()), osr.SpatialReference(out.GetProjection())
    assert a.IsSame(b)
    band = out.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte
    assert band.GetNoDataValue() == 0
    ct = band.GetRasterColorTable()
    for c in labels.DEFAULT_CLASSES:
        assert ct.GetColorEntry(c.code)[:3] == c.color
    assert band.GetCategoryNames()[: labels.NUM_CLASSES] == labels.CLASS_NAMES
    dem_arr, _ = _dem_array(dem)
    np.testing.assert_array_equal(cls == 0, np.isnan(dem_arr))
    assert set(np.unique(cls)) <= {0, 1, 2, 3, 4}


def test_block_layout_does_not_change_the_result(dems, tmp_path):
    dem = dems["zion"]
    a = tmp_path / "a.tif"
    b = tmp_path / "b.tif"
    rules.classify_raster(dem, str(a))
    rules.classify_raster(dem, str(b), block_size=61)
    np.testing.assert_array_equal(rasters.read_array(str(a)), rasters.read_array(str(b)))
    arr, info = _dem_array(dem)
    np.testing.assert_array_equal(rules.classify_array(arr, info), rasters.read_array(str(a)))


def test_cancel_leaves_no_output(dems, tmp_path):
    out = tmp_path / "cancelled.tif"
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        rules.classify_raster(dems["bigtujunga"], str(out), progress=Progress(is_cancelled=cancelled), block_size=128)
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_errors_are_user_sentences(dems, tmp_path):
    with pytest.raises(LandformError, match="must not exceed"):
        rules.RuleParams(plain_max_relief_m=300).validate()
    with pytest.raises(LandformError, match="positive"):
        rules.classify_raster(dems["fortworth"], str(tmp_path / "x.tif"), rules.RuleParams(local_window_m=0))
    # A DEM without a CRS: its cell size in metres is unknown.
    nocrs = str(tmp_path / "nocrs.tif")
    gdal.Translate(nocrs, dems["vermont"], options="-a_srs None" if False else "")
    ds = gdal.Open(nocrs, gdal.GA_Update)
    ds.SetProjection("")
    ds = None
    with pytest.raises(LandformError, match="coordinate reference system"):
        rules.classify_raster(nocrs, str(tmp_path / "y.tif"))
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "y.tif").exists()


def test_cli(dems, tmp_path, repo_root):
    out = tmp_path / "cli.tif"
    r = subprocess.run(
        [sys.executable, "-m", "landform_plugin.core", "rules", dems["vermont"], str(out), "--plain-max-relief-m", "40"],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "Mountain" in r.stdout
    ref = tmp_path / "ref.tif"
    rules.classify_raster(dems["vermont"], str(ref), rules.RuleParams(plain_max_relief_m=40))
    np.testing.assert_array_equal(rasters.read_array(str(out)), rasters.read_array(str(ref)))
