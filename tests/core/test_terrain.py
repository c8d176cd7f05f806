"""core.terrain on real DEMs, against gdaldem, richdem, brute force and a UTM reprojection.

Measured (GDAL 3.6.2, richdem2 2.4.3) on bigtujunga (Int16, 30 m) and vermont
(Float32, 90 m), the whole raster including edges, written block by block:
- slope vs `gdaldem slope -compute_edges`: max |diff| 7.6e-6 deg (tolerance 1e-4 deg);
- aspect vs `gdaldem aspect -compute_edges`: max circular |diff| 3.1e-5 deg
  (tolerance 1e-3 deg); flat cells: ours -1 exactly where gdaldem writes -9999;
- hillshade vs `gdaldem hillshade -compute_edges`: max |diff| 0 (tolerance 1 DN);
- curvatures vs richdem TerrainAttribute (curvature, -profile_curvature,
  planform_curvature): correlation 1 - 1e-11, max |diff| 3.0e-6 /(100 m)
  (tolerances: correlation > 0.99, |diff| <= 1e-4) away from the outermost
  row/column (there we extrapolate like gdaldem, richdem copies the centre);
- a geographic DEM against its UTM reprojection (gdalwarp cubic, same metric
  cell size): slope mean/median/90th percentile within 1.7 % (tolerance 2.5 %);
  treating degrees as 111.32 km on both axes is off by ~9-10 % and fails it;
- RDLS equals a brute-force shifted-window max - min exactly.
"""
import csv
import os
import subprocess

import numpy as np
import pytest
from osgeo import gdal

from landform_plugin.core import rasters, terrain
from landform_plugin.core.errors import Cancelled, LandformError
from landform_plugin.core.progress import Progress
from tests.geotiff import write_geotiff

GDALDEM_NODATA = -9999.0


def _read(path):
    ds = gdal.Open(str(path))
    b = ds.GetRasterBand(1)
    return b.ReadAsArray().astype(np.float64), b.GetNoDataValue(), ds


def _whole(path, band=1):
    ds, info = rasters.open_raster(path, band)
    elev = rasters.read_window(ds.GetRasterBand(band), rasters.Window(0, 0, info.width, info.height, 0), info.nodata)
    dx, dy = rasters.cell_sizes_m(info)
    return elev, dx, dy, info


def _gdaldem(tmp_path, dem, mode):
    out = str(tmp_path / f"gdaldem_{mode}.tif")
    subprocess.run(["gdaldem", mode, dem, out, "-compute_edges", "-q"], check=True)
    return out


def _copy_with_holes(src, dst):
    """A real DEM with NoData holes and a NoData strip on an edge (tests NoData next to cells)."""
    ds = gdal.Open(src)
    arr = ds.GetRasterBand(1).ReadAsArray()
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    rng = np.random.default_rng(3)
    for _ in range(40):
        r, c = rng.integers(0, arr.shape[0] - 12), rng.integers(0, arr.shape[1] - 12)
        arr[r : r + rng.integers(1, 12), c : c + rng.integers(1, 12)] = nodata
    arr[:, :5] = nodata
    arr[200, :] = nodata
    out = gdal.GetDriverByName("GTiff").CreateCopy(str(dst), ds)
    out.GetRasterBand(1).WriteArray(arr)
    out = None
    return str(dst)


@pytest.fixture(scope="module")
def projected(dems, tmp_path_factory):
    """Our factors (written block by block, small blocks) and gdaldem's for projected real DEMs."""
    tmp = tmp_path_factory.mktemp("proj")
    cases = {
        "bigtujunga": dems["bigtujunga"],
        "vermont": dems["vermont"],
        "bigtujunga_holes": _copy_with_holes(dems["bigtujunga"], tmp / "holes.tif"),
    }
    out = {}
    for name, dem in cases.items():
        d = tmp / name
        d.mkdir()
        outputs = {n: str(d / f"{n}.tif") for n in terrain.FACTOR_NAMES}
        terrain.derive_terrain_factors(dem, outputs, block_rows=100, block_cols=256, workers=2)
        g = {m: _gdaldem(d, dem, m) for m in ("slope", "aspect", "hillshade")}
        out[name] = (dem, outputs, g)
    return out


@pytest.mark.parametrize("case", ["bigtujunga", "vermont", "bigtujunga_holes"])
def test_slope_matches_gdaldem(projected, case):
    dem, ours, g = projected[case]
    a, nd, _ = _read(ours["slope"])
    b, gnd, _ = _read(g["slope"])
    assert nd == terrain.NODATA and gnd == GDALDEM_NODATA
    np.testing.assert_array_equal(a == nd, b == gnd)  # NoData exactly where gdaldem has it
    valid = a != nd
    assert valid.mean() > 0.8
    assert np.abs(a[valid] - b[valid]).max() <= 1e-4


@pytest.mark.parametrize("case", ["bigtujunga", "vermont", "bigtujunga_holes"])
def test_aspect_matches_gdaldem_and_flat_value(projected, case):
    dem, ours, g = projected[case]
    a, nd, _ = _read(ours["aspect"])
    b, _, _ = _read(g["aspect"])
    elev, *_ = _whole(dem)
    valid_dem = np.isfinite(elev)
    np.testing.assert_array_equal(a == nd, ~valid_dem)
    flat = a == terrain.ASPECT_FLAT
    # gdaldem writes -9999 both for NoData and for flat cells.
    np.testing.assert_array_equal(flat, (b == GDALDEM_NODATA) & valid_dem)
    m = valid_dem & ~flat
    assert ((a[m] >= 0) & (a[m] < 360)).all()
    d = np.abs(a[m] - b[m])
    d = np.minimum(d, 360 - d)
    assert d.max() <= 1e-3


@pytest.mark.parametrize("case", ["bigtujunga", "vermont", "bigtujunga_holes"])
def test_hillshade_matches_gdaldem(projected, case):
    dem, ours, g = projected[case]
    a, nd, ds = _read(ours["hillshade"])
    b, gnd, _ = _read(g["hillshade"])
    assert ds.GetRasterBand(1).DataType == gdal.GDT_Byte and nd == 0 == gnd
    np.testing.assert_array_equal(a == 0, b == 0)
    assert np.abs(a - b).max() <= 1


@pytest.mark.parametrize("case", ["bigtujunga", "vermont", "bigtujunga_holes"])
def test_curvatures_match_richdem(projected, case):
    import richdem  # test-only dependency (requirements.txt pins richdem2); missing must fail, not skip
    dem, ours, _ = projected[case]
    rd = richdem.LoadGDAL(dem)
    # ours = (sign) x richdem; see the core.terrain docstring.
    for name, attrib, sign in (
        ("curvature", "curvature", 1.0),
        ("profile_curvature", "profile_curvature", -1.0),
        ("plan_curvature", "planform_curvature", 1.0),
    ):
        a, nd, _ = _read(ours[name])
        r = np.asarray(richdem.TerrainAttribute(rd, attrib=attrib), dtype=np.float64) * sign
        m = (a != nd) & (np.asarray(rd) != rd.no_data)
        m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = False  # raster edges: documented difference
        assert m.sum() > 0.7 * m.size
        assert np.corrcoef(a[m], r[m])[0, 1] > 0.99
        assert np.abs(a[m] - r[m]).max() <= 1e-4, name
        assert np.abs(r[m]).max() > 0.1  # the comparison is not between zeros


def test_curvature_signs_on_a_real_ridge_and_valley(dems):
    """Positive = convex: the highest cell of a DEM is convex, the lowest concave."""
    elev, dx, dy, info = _whole(dems["bigtujunga"])
    f = terrain.compute_factors_block(elev, dx, dy, terrain.CURVATURES, {})
    inner = np.full(elev.shape, np.nan)
    inner[2:-2, 2:-2] = elev[2:-2, 2:-2]
    top = np.unravel_index(np.nanargmax(inner), elev.shape)
    low = np.unravel_index(np.nanargmin(inner), elev.shape)
    assert f["curvature"][top] > 0 and f["curvature"][low] < 0


def _brute_rdls(elev, wy, wx):
    """max - min of the valid cells in the window, by shifting the whole array (no doubling)."""
    ry, rx = wy // 2, wx // 2
    pad = np.pad(elev.astype(np.float64), ((ry, ry), (rx, rx)), constant_values=np.nan)
    hi = np.full(elev.shape, -np.inf)
    lo = np.full(elev.shape, np.inf)
    h, w = elev.shape
    for dy in range(wy):
        for dx in range(wx):
            v = pad[dy : dy + h, dx : dx + w]
            ok = np.isfinite(v)
            hi = np.where(ok, np.maximum(hi, v), hi)
            lo = np.where(ok, np.minimum(lo, v), lo)
    out = hi - lo
    out[~np.isfinite(elev)] = np.nan
    return out


@pytest.mark.parametrize("name,window_m", [("zion", 1000.0), ("luxembourg", 5000.0), ("vermont", 2000.0)])
def test_rdls_equals_brute_force(dems, tmp_path, name, window_m):
    """Block-wise RDLS (small blocks, 2 threads) equals a brute-force window computation exactly."""
    elev, dx, dy, info = _whole(dems[name])
    params = terrain.resolve_params({"rdls_window_m": window_m}, (dx[info.height // 2], dy[info.height // 2]))
    wy, wx = params.rdls_window_px
    assert wy % 2 == 1 and wx % 2 == 1 and wy >= 3
    mid = info.height // 2
    assert wy == pytest.approx(window_m / dy[mid], abs=1.0) and wx == pytest.approx(window_m / dx[mid], abs=1.0)
    out = tmp_path / "rdls.tif"
    terrain.derive_terrain_factors(
        dems[name], {"rdls": str(out)}, params={"rdls_window_m": window_m}, block_rows=37, block_cols=64, workers=2
    )
    got, nd, _ = _read(out)
    want = _brute_rdls(elev, wy, wx).astype(np.float32)
    np.testing.assert_array_equal(got == nd, np.isnan(want))
    m = got != nd
    np.testing.assert_array_equal(got[m], want[m].astype(np.float64))
    assert want[m].max() > 50  # real relief, not zeros


def test_blockwise_equals_whole_array_and_threads_agree(dems, tmp_path):
    """Halo handling: small blocks, 1 or 2 workers, give the whole-array result bit for bit (geographic DEM)."""
    dem = dems["jacksboro"]
    elev, dx, dy, info = _whole(dem)
    params = terrain.resolve_params({}, (dx[info.height // 2], dy[info.height // 2]))
    whole = terrain.compute_factors_block(elev, dx, dy, terrain.FACTOR_NAMES, params, raster_box=(0, info.height, 0, info.width))
    for workers in (1, 2):
        d = tmp_path / f"w{workers}"
        outputs = {n: str(d / f"{n}.tif") for n in terrain.FACTOR_NAMES}
        terrain.derive_terrain_factors(dem, outputs, block_rows=50, block_cols=70, workers=workers)
        for n in terrain.FACTOR_NAMES:
            got, nd, ds = _read(outputs[n])
            want = terrain._to_file_values(n, whole[n]).astype(np.float64)
            np.testing.assert_array_equal(got, want, err_msg=n)
            assert ds.GetGeoTransform() == info.geotransform
            assert ds.GetProjection() == info.crs_wkt
            assert ds.GetRasterBand(1).GetBlockSize() == [512, 512]
            assert "ZSTD" in (ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION", ""))


def test_in_memory_api_contract(dems):
    """compute_factors_block on a window read with halo_pixels equals the whole raster's values."""
    elev, dx, dy, info = _whole(dems["zion"])
    params = terrain.resolve_params({}, (dx[info.height // 2], dy[info.height // 2]))
    whole = terrain.compute_factors_block(elev, dx, dy, terrain.FACTOR_NAMES, params)
    halo = terrain.halo_pixels(terrain.FACTOR_NAMES, params)
    assert halo == max(1, params.rdls_window_px[0] // 2, params.rdls_window_px[1] // 2)
    assert terrain.halo_pixels(["slope", "curvature"]) == 1
    with pytest.raises(ValueError):
        terrain.halo_pixels(["rdls"], {})
    assert terrain.halo_pixels(["rdls"], {"rdls_window_m": 900}, 90.0) == 5
    ds, _ = rasters.open_raster(dems["zion"])
    win = rasters.Window(150, 100, 120, 90, halo)
    block = rasters.read_window(ds.GetRasterBand(1), win, info.nodata)
    bdx, bdy = rasters.cell_sizes_m(info, win.y0 - halo, block.shape[0])
    full = terrain.compute_factors_block(block, bdx, bdy, terrain.FACTOR_NAMES, params)
    cropped = terrain.compute_factors_block(block, bdx, bdy, terrain.FACTOR_NAMES, params, crop=halo)
    for n in terrain.FACTOR_NAMES:
        want = whole[n][100:190, 150:270]
        assert full[n].shape == block.shape and full[n].dtype == np.float32
        np.testing.assert_array_equal(full[n][halo:-halo, halo:-halo], want)
        np.testing.assert_array_equal(cropped[n], want)
    # dict params and scalar cell sizes are accepted
    r = terrain.compute_factors_block(block, 80.0, 90.0, ["slope", "aspect"], {"z_factor": 1.0})
    assert r["slope"].shape == block.shape


def test_z_factor_scales_slope_and_rdls(dems):
    elev, dx, dy, info = _whole(dems["vermont"])
    one = terrain.compute_factors_block(elev, dx, dy, ["slope", "rdls"], {"rdls_window_m": 900})
    two = terrain.compute_factors_block(elev, dx, dy, ["slope", "rdls"], {"rdls_window_m": 900, "z_factor": 2.0})
    m = np.isfinite(one["slope"])
    np.testing.assert_allclose(np.tan(np.radians(two["slope"][m])), 2 * np.tan(np.radians(one["slope"][m])), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(two["rdls"][m], 2 * one["rdls"][m], rtol=1e-6)


def _slope_stats(path):
    elev, dx, dy, info = _whole(path)
    s = terrain.compute_factors_block(elev, dx, dy, ["slope"], {}, crop=1)["slope"]
    s = s[np.isfinite(s)]
    return np.array([s.mean(), np.percentile(s, 50), np.percentile(s, 90)])


@pytest.mark.parametrize("name,epsg", [("zion", 32612), ("jacksboro", 32617), ("fortworth", 32614)])
def test_geographic_slope_matches_utm_reprojection(dems, tmp_path, name, epsg):
    dem = dems[name]
    ds, info = rasters.open_raster(dem)
    assert info.is_geographic
    dxm, dym = rasters.cell_sizes_m(info, info.height // 2, 1)
    utm = str(tmp_path / "utm.tif")
    subprocess.run(
        ["gdalwarp", "-q", "-t_srs", f"EPSG:{epsg}", "-r", "cubic", "-ot", "Float32", "-dstnodata", "-9999",
         "-tr", repr(float(dxm[0])), repr(float(dym[0])), dem, utm],
        check=True,
    )
    geo, proj = _slope_stats(dem), _slope_stats(utm)
    rel = np.abs(geo - proj) / proj
    assert (rel < 0.025).all(), (geo, proj)
    # Degrees taken as 111.32 km on both axes (no per-row conversion) would fail the same check.
    elev, *_ = _whole(dem)
    naive = terrain.compute_factors_block(elev, info.pixel_width * 111320.0, info.pixel_height * 111320.0, ["slope"], {}, crop=1)["slope"]
    naive = naive[np.isfinite(naive)]
    assert abs(naive.mean() - proj[0]) / proj[0] > 0.05


def test_correlation_table(dems, tmp_path):
    csv_path = tmp_path / "corr.csv"
    slope_path = tmp_path / "slope.tif"
    rdls_path = tmp_path / "rdls.tif"
    res = terrain.derive_terrain_factors(dems["bigtujunga"], {"slope": str(slope_path), "rdls": str(rdls_path)}, correlation_csv=str(csv_path))
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    names = ["dem"] + list(terrain.FACTOR_NAMES)
    assert rows[0] == ["factor"] + names + ["n_pixels"]
    mat = np.array([[float(v) for v in r[1:-1]] for r in rows[1:]])
    assert [r[0] for r in rows[1:]] == names
    np.testing.assert_allclose(np.diag(mat), 1.0)
    np.testing.assert_allclose(mat, mat.T)
    assert (np.abs(mat) <= 1.0).all()
    assert min(int(r[-1]) for r in rows[1:]) > 100_000
    # the sample agrees with the full-raster correlation of the written files
    s, snd, _ = _read(slope_path)
    r, rnd, _ = _read(rdls_path)
    m = (s != snd) & (r != rnd)
    full = np.corrcoef(s[m], r[m])[0, 1]
    assert mat[names.index("slope"), names.index("rdls")] == pytest.approx(full, abs=0.02)
    assert full > 0.4  # mountains: slope and relief go together (paper Fig. 4)
    assert mat[names.index("curvature"), names.index("plan_curvature")] > 0.5
    assert res["correlation"]["names"] == names


def _real_patch(dems, rows=60, cols=80):
    return gdal.Open(dems["vermont"]).ReadAsArray()[:rows, :cols].astype(np.float32)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("band", "band 3 does not exist"),
        ("allnodata", "only NoData"),
        ("tiny", "at least 3 x 3"),
        ("rdls_window", "larger than the raster"),
        ("complex", "real numbers"),
        ("unreadable", "Cannot open"),
        ("nocrs", "no coordinate reference system"),
        ("nooutput", "at least one output"),
        ("zfactor", "z-factor"),
    ],
)
def test_bad_input_raises_and_leaves_nothing(dems, tmp_path, kind, message):
    src = tmp_path / "in"
    src.mkdir()
    patch = _real_patch(dems)
    band, params, outputs = 1, {}, {"slope": str(tmp_path / "out" / "slope.tif"), "rdls": str(tmp_path / "out" / "rdls.tif")}
    if kind == "band":
        dem, band = write_geotiff(src / "two.tif", patch, bands=2), 3
    elif kind == "allnodata":
        dem = write_geotiff(src / "nd.tif", np.full_like(patch, -9999), nodata=-9999)
    elif kind == "tiny":
        dem = write_geotiff(src / "tiny.tif", patch[:2, :5])
    elif kind == "rdls_window":
        dem, params = write_geotiff(src / "small.tif", patch), {"rdls_window_m": 5000}
    elif kind == "complex":
        dem = write_geotiff(src / "c.tif", patch, dtype=gdal.GDT_CFloat32)
    elif kind == "unreadable":
        dem = str(src / "junk.tif")
        with open(dem, "wb") as fh:
            fh.write(b"not a raster at all")
    elif kind == "nocrs":
        dem = write_geotiff(src / "nocrs.tif", patch, epsg=None)
    elif kind == "nooutput":
        dem, outputs = write_geotiff(src / "ok.tif", patch), {}
    elif kind == "zfactor":
        dem, params = write_geotiff(src / "ok.tif", patch), {"z_factor": 0.0}
    with pytest.raises(LandformError, match=message):
        terrain.derive_terrain_factors(dem, outputs, band=band, params=params)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_cancel_leaves_no_output(dems, tmp_path):
    calls = []

    def set_progress(p):
        calls.append(p)

    progress = Progress(set_progress=set_progress, is_cancelled=lambda: len(calls) >= 2)
    out = tmp_path / "out"
    outputs = {n: str(out / f"{n}.tif") for n in terrain.FACTOR_NAMES}
    with pytest.raises(Cancelled):
        terrain.derive_terrain_factors(
            dems["bigtujunga"], outputs, correlation_csv=str(out / "corr.csv"), progress=progress, block_rows=64, block_cols=256
        )
    assert 2 <= len(calls) < 10  # stopped promptly, not at the end
    assert os.listdir(out) == []


def test_progress_reaches_100_and_nodata_file_values(dems, tmp_path):
    seen = []
    out = tmp_path / "slope.tif"
    res = terrain.derive_terrain_factors(dems["luxembourg"], {"slope": str(out)}, progress=Progress(set_progress=seen.append))
    assert seen[-1] == pytest.approx(100.0) and seen == sorted(seen)
    a, nd, ds = _read(out)
    elev, *_ = _whole(dems["luxembourg"])
    assert nd == terrain.NODATA
    np.testing.assert_array_equal(a == nd, np.isnan(elev))  # 46 % NoData propagated, nothing more
    assert res["outputs"] == {"slope": str(out)}


def test_cli(dems, tmp_path, capsys):
    from landform_plugin.core.__main__ import main

    rc = main(["terrain", dems["vermont"], str(tmp_path), "--factors", "slope,rdls", "--rdls-window-m", "900", "--correlation", str(tmp_path / "c.csv")])
    assert rc == 0
    assert sorted(os.listdir(tmp_path)) == ["c.csv", "rdls.tif", "slope.tif"]
    assert main(["terrain", dems["vermont"], str(tmp_path), "--factors", "slope", "--rdls-window-m", "-5"]) == 0  # no rdls: window unused
    assert main(["terrain", dems["vermont"], str(tmp_path), "--factors", "rdls", "--rdls-window-m", "99999"]) == 2
    assert "larger than the raster" in capsys.readouterr().err


def test_strips_give_identical_results(dems, monkeypatch):
    """The 3x3 kernels run on row strips for cache locality; strip size never changes a value."""
    elev, dx, dy, info = _whole(dems["jacksboro"])
    names = [n for n in terrain.FACTOR_NAMES if n != "rdls"]
    box = (0, info.height, 0, info.width)
    monkeypatch.setattr(terrain, "STRIP_PIXELS", 1 << 30)
    whole = terrain.compute_factors_block(elev, dx, dy, names, {}, raster_box=box)
    for strip in (403 * 7, 1000, 1):
        monkeypatch.setattr(terrain, "STRIP_PIXELS", strip)
        got = terrain.compute_factors_block(elev, dx, dy, names, {}, raster_box=box)
        for n in names:
            np.testing.assert_array_equal(got[n], whole[n], err_msg=f"{n} strip {strip}")


def test_rdls_strips_equal_brute_force(dems, monkeypatch):
    elev, dx, dy, info = _whole(dems["jacksboro"])
    params = terrain.resolve_params({"rdls_window_m": 1200.0}, (dx[info.height // 2], dy[info.height // 2]))
    want = _brute_rdls(elev, *params.rdls_window_px).astype(np.float32)
    for strip in (1 << 30, 5000, 1):
        monkeypatch.setattr(terrain, "STRIP_PIXELS", strip)
        got = terrain.compute_factors_block(elev, dx, dy, ["rdls"], params)["rdls"]
        np.testing.assert_array_equal(got, want, err_msg=f"strip {strip}")


def test_window_past_the_raster_edge_matches_whole_raster(dems):
    """A window whose halo runs past the raster's right and bottom edges (crop=0) gives the
    whole-raster values (regression: edge neighbours indexed past the array)."""
    from landform_plugin.core import rasters

    ds, info = rasters.open_raster(dems["vermont"])
    win = rasters.Window(173, 150, 64, 38, halo=56)
    elev = rasters.read_window(ds.GetRasterBand(1), win, info.nodata)
    dx, dy = rasters.cell_sizes_m(info, 0, info.height)
    rows = np.clip(np.arange(win.y0 - win.halo, win.y0 - win.halo + elev.shape[0]), 0, info.height - 1)
    box = terrain.window_raster_box(win, info.width, info.height)
    names = ["slope", "curvature"]
    out = terrain.compute_factors_block(elev, dx[rows], dy[rows], names, terrain.FactorParams(), crop=0, raster_box=box)
    full = ds.GetRasterBand(1).ReadAsArray().astype(np.float32)
    ref = terrain.compute_factors_block(full, dx, dy, names, terrain.FactorParams(), crop=0,
                                        raster_box=(0, info.height, 0, info.width))
    h = win.halo
    for name in names:
        got = out[name][h : h + win.height, h : h + win.width]
        want = ref[name][win.y0 : win.y0 + win.height, win.x0 : win.x0 + win.width]
        np.testing.assert_allclose(got, want, atol=1e-4)
