"""DEM perturbations (core.perturb) and the robust training copies built from them (core.chips).

Labels are rule-derived (relief classes, see test_chips.relief_labels), not a landform map."""
import numpy as np
import pytest
from landform_plugin.core import chips, inputs, perturb, terrain
from landform_plugin.core.rasters import Window, open_raster, read_window

from tests.geotiff import write_geotiff

from .test_chips import relief_labels, subset


def test_noise_fields_have_the_stated_size_and_correlation():
    z = np.full((400, 400), 100.0, np.float32)
    z[:10, :10] = np.nan
    rng = np.random.default_rng(0)
    noisy = perturb.gaussian_noise(z, 3.0, rng)
    assert np.isnan(noisy[:10, :10]).all() and np.isfinite(noisy[10:]).all()
    assert np.nanstd(noisy - z) == pytest.approx(3.0, rel=0.02)
    # smooth field: standard deviation = amplitude, correlation 1/e at the correlation length
    f = perturb.smooth_field((512, 512), 10.0, 1000.0, 50.0, np.random.default_rng(1))  # 20 cells
    assert f.std() == pytest.approx(10.0, rel=1e-3)
    at = lambda lag: float(np.corrcoef(f[:, :-lag].ravel(), f[:, lag:].ravel())[0, 1])  # noqa: E731
    assert at(20) == pytest.approx(np.exp(-1), abs=0.08)
    assert at(1) > 0.99 and abs(at(80)) < 0.1


def test_voids_and_cuts():
    rng = np.random.default_rng(2)
    mask = perturb.void_mask((300, 300), 0.05, (500.0, 2000.0), 90.0, rng)
    assert 0.05 <= mask.mean() < 0.05 + np.pi * (1000 / 90) ** 2 / 300**2 + 1e-9
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    assert n >= 2
    sizes = np.bincount(lab.ravel())[1:]
    # typical blobs are discs of 0.5-2 km (overlapping ones merge into larger patches)
    assert np.pi * (250 / 90 - 1) ** 2 <= np.median(sizes) <= np.pi * (1000 / 90 + 1) ** 2
    for seed in range(50):
        box = perturb.random_cut(400, 300, 64, np.random.default_rng(seed))
        x0, y0, x1, y1 = box
        assert box != (0, 0, 400, 300)
        assert x1 - x0 >= max(64, perturb.CUT_MIN_KEEP * 400) and y1 - y0 >= max(64, perturb.CUT_MIN_KEEP * 300)
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
    assert perturb.random_cut(60, 60, 64, np.random.default_rng(0)) is None  # too small to cut
    copy = perturb.training_copy(np.zeros((200, 200), np.float32), 90.0, 64, np.random.default_rng(5))
    assert copy.z.shape == (200, 200) and copy.description.startswith("noise")


@pytest.fixture(scope="module")
def robust_chips(dems, tmp_path_factory):
    d = tmp_path_factory.mktemp("robust_chips")
    dem = subset(dems["bigtujunga"], d / "bt.tif", 300, 0, 512, 384)
    lab = relief_labels(dem, d / "labels.tif")
    factors = ["dem", "slope"]
    clean = chips.export_chips(chips.ChipConfig(dems=[dem], labels=str(d / "labels.tif"), out_dir=str(d / "clean"),
                                                factors=factors, chip_size=128, min_labelled=0.0))
    cfg = chips.ChipConfig(dems=[dem], labels=str(d / "labels.tif"), out_dir=str(d / "robust"), factors=factors,
                           chip_size=128, min_labelled=0.0, robust_copies=6, seed=3)
    m = chips.export_chips(cfg)
    return {"dir": d, "dem": dem, "lab": lab, "clean": clean, "m": m, "cfg": cfg, "factors": factors}


def test_robust_copies_keep_clean_labels_and_compute_inputs_as_classification(robust_chips):
    r = robust_chips
    d, m, lab = r["dir"], r["m"], r["lab"]
    clean_n = len(r["clean"]["chips"])
    copies = [c for c in m["chips"] if "copy" in c]
    # the clean chips are unchanged, and the copies come on top of them
    assert [c["window"] for c in m["chips"][:clean_n]] == [c["window"] for c in r["clean"]["chips"]]
    for a, b in zip(m["chips"][:clean_n], r["clean"]["chips"]):
        np.testing.assert_array_equal(np.load(d / "robust" / a["x"]), np.load(d / "clean" / b["x"]))
    assert len(copies) >= 6 and m["sources"][0]["robust_chips"] == len(copies)
    assert {c["copy"] for c in copies} == set(range(6))

    ds, info = open_raster(r["dem"])
    z_clean = ds.GetRasterBand(1).ReadAsArray().astype(np.float32)
    halo = inputs.halo_pixels(r["factors"], m["normalisation"], 30.0)
    crossing = holed = 0
    for c in copies:
        x0, y0, w, h = c["window"]
        x = np.load(d / "robust" / c["x"])
        y = np.load(d / "robust" / c["y"])
        assert np.isfinite(x).all() and x.shape == (2, 128, 128)
        # the same copy, drawn again from its seed
        copy = perturb.training_copy(z_clean, 30.0, 64, np.random.default_rng([3, 0, c["copy"], 1]))
        assert copy.description == c["perturbation"]
        bx0, by0, bx1, by1 = copy.box
        inside = np.zeros((h, w), bool)
        inside[max(by0 - y0, 0) : by1 - y0, max(bx0 - x0, 0) : bx1 - x0] = True
        ref = lab[y0 : y0 + h, x0 : x0 + w]
        zw = copy.z[y0 : y0 + h, x0 : x0 + w]
        # labels: the clean DEM's inside the crop, ignored in voids and past the crop
        np.testing.assert_array_equal(y[~inside], 255)
        keep = inside & np.isfinite(zw)
        np.testing.assert_array_equal(y[keep], ref[keep])
        assert (y[~np.isfinite(zw)] == 255).all()
        holed += bool((inside & ~np.isfinite(zw)).any())
        if inside.all():
            continue
        crossing += 1
        # inputs as classification computes them for the crop written as its own raster:
        # the window read from that file, 3x3 factors with the file's edges, mirrored past them
        gt = ds.GetGeoTransform()
        crop = write_geotiff(d / f"crop_{c['id']}.tif", copy.z[by0:by1, bx0:bx1], nodata=float("nan"),
                             gt=(gt[0] + bx0 * gt[1], gt[1], 0, gt[3] + by0 * gt[5], 0, gt[5]),
                             crs_wkt=ds.GetProjection())
        cds, cinfo = open_raster(crop)
        ix0, iy0 = max(x0, bx0) - bx0, max(y0, by0) - by0
        ix1, iy1 = min(x0 + w, bx1) - bx0, min(y0 + h, by1) - by0
        win = Window(ix0, iy0, ix1 - ix0, iy1 - iy0, halo)
        raw = read_window(cds.GetRasterBand(1), win, cinfo.nodata)
        box = terrain.window_raster_box(win, cinfo.width, cinfo.height)
        core, _ = inputs.make_input(raw, halo, r["factors"], m["normalisation"], 30.0, raster_box=box)
        pads = ((0, 0), (iy0 + by0 - y0, y0 + h - (iy1 + by0)), (ix0 + bx0 - x0, x0 + w - (ix1 + bx0)))
        np.testing.assert_allclose(x, inputs.reflect_pad(core, pads), atol=1e-5)
    assert crossing >= 1 and holed >= 1  # at least one chip shows a crop's edge, one a void

    # the same seed gives the same copies
    again = chips.export_chips(chips.ChipConfig(**{**r["cfg"].__dict__, "out_dir": str(d / "again")}))
    assert [c["window"] for c in again["chips"]] == [c["window"] for c in m["chips"]]
    last = again["chips"][-1]
    np.testing.assert_array_equal(np.load(d / "again" / last["x"]), np.load(d / "robust" / m["chips"][-1]["x"]))
