"""Lattice-anchored tile plans, blending weights and blocks, and tile-independent input normalisation."""
import numpy as np
import pytest

from landform_plugin.core import inputs
from landform_plugin.core.errors import LandformError
from landform_plugin.core.rasters import Window, open_raster, read_window
from landform_plugin.core.tiling import accumulate, hann, plan_tiles


@pytest.mark.parametrize("size", [(1, 1), (31, 45), (600, 323), (1000, 1000), (1197, 643)])
@pytest.mark.parametrize("tile,overlap,pad", [(256, 0.25, 64), (128, 0.5, 0), (512, 0.0, 32)])
@pytest.mark.parametrize("origin", [(0, 0), (-4711, 1234)])
def test_plan_covers_raster_with_stride_aligned_offsets(size, tile, overlap, pad, origin):
    w, h = size
    domain = (origin[0], origin[1], origin[0] + w, origin[1] + h)
    plan = plan_tiles(domain, tile, overlap, 32, 0, pad)
    tiles = plan.tiles()
    assert plan.size_x % 32 == 0 and plan.size_y % 32 == 0 and len(tiles) == plan.n_tiles
    xs = sorted({(t.x0, t.width) for t in tiles})
    ys = sorted({(t.y0, t.height) for t in tiles})
    assert all(x % 32 == 0 and n % 32 == 0 and n > 0 for x, n in xs + ys)  # every tile on the global stride lattice
    if w + 2 * pad + 31 <= tile:  # smaller than one tile: one whole-raster pass, at least pad cells past it
        assert len(xs) == 1 and xs[0][0] <= domain[0] - pad and sum(xs[0]) >= domain[2] + pad
    elif w + 2 * pad > tile:  # anchored on the lattice: origins are global multiples of the step
        assert all(x % plan.step_x == 0 for x, _ in xs[1:])
        if overlap == 0:  # crop mode: the end tiles are cut to the domain (plus pad, on the stride lattice)
            assert domain[0] - pad - 32 < xs[0][0] <= domain[0] and sum(xs[-1]) < domain[2] + pad + 32
        else:
            assert xs[0][0] % plan.step_x == 0 and all(n == tile for _, n in xs)
    assert xs[0][0] <= domain[0] and ys[0][0] <= domain[1]
    assert sum(xs[-1]) >= domain[2] and sum(ys[-1]) >= domain[3]
    assert xs[-1][0] < domain[2] and ys[-1][0] < domain[3]  # every tile holds raster cells
    assert all(b[0] <= a[0] + a[1] for a, b in zip(xs[:-1], xs[1:]))  # no gaps
    if overlap == 0:  # crop mode: tiles abut, no cell is predicted twice
        assert all(b[0] == a[0] + a[1] for a, b in zip(xs[:-1], xs[1:]))


def test_plan_refuses_bad_values():
    with pytest.raises(LandformError, match="multiple of 32"):
        plan_tiles((0, 0, 100, 100), 100, 0.25)
    with pytest.raises(LandformError, match="overlap"):
        plan_tiles((0, 0, 100, 100), 128, 0.9)
    with pytest.raises(LandformError, match="empty"):
        plan_tiles((0, 0, 0, 10), 128, 0.25)


def test_hann_weights_positive_and_edge_aware():
    w = hann(256)
    assert w.min() > 0 and abs(w.max() - 1) < 1e-3 and np.allclose(w, w[::-1])
    plan = plan_tiles((0, 0, 1000, 700), 256, 0.25)
    tiles = plan.tiles()
    first = plan.weights(tiles[0])
    assert first[:128, :128].min() == 1.0  # raster-edge side not tapered
    mid = plan.weights([t for t in tiles if t.col == 1 and t.row == 1][0])
    assert mid[0, 0] < 1e-3 and mid[128, 128] > 0.99
    crop = plan_tiles((0, 0, 1000, 700), 256, 0.0)
    assert (crop.weights(crop.tiles()[0]) == 1).all()


@pytest.mark.parametrize("overlap", [0.25, 0.0])
def test_blending_reproduces_a_smooth_field_exactly_whatever_the_blocks(overlap):
    """Blending tiles cut from one field returns that field (weights normalise), and every block
    layout gives bit-identical values: a block sums the same tiles in the same order."""
    rng = np.random.default_rng(0)
    w, h = 733, 517
    field = rng.random((3, h, w)).astype(np.float32)
    domain = (-100, 64, -100 + w, 64 + h)
    plan = plan_tiles(domain, 128, overlap, 32, 0, 64)

    def run(block):
        out = np.full((3, h, w), np.nan, np.float32)
        for box in plan.block_boxes(block):
            bw, bh = box[2] - box[0], box[3] - box[1]
            acc, wsum = np.zeros((3, bh, bw), np.float32), np.zeros((bh, bw), np.float32)
            for t in plan.tiles_touching(box):
                tile = np.zeros((3, t.height, t.width), np.float32)
                ys, xs = max(domain[1], t.y0), max(domain[0], t.x0)
                ye, xe = min(domain[3], t.y0 + t.height), min(domain[2], t.x0 + t.width)
                tile[:, ys - t.y0 : ye - t.y0, xs - t.x0 : xe - t.x0] = field[:, ys - domain[1] : ye - domain[1],
                                                                              xs - domain[0] : xe - domain[0]]
                accumulate(acc, wsum, box, t, tile, plan.weights(t))
            sl = (slice(None), slice(box[1] - domain[1], box[3] - domain[1]), slice(box[0] - domain[0], box[2] - domain[0]))
            assert np.isnan(out[sl]).all()  # each cell in exactly one block
            out[sl] = acc / wsum
        return out

    a, b = run(96), run(400)
    assert not np.isnan(a).any()
    assert np.abs(a - field).max() < 1e-5
    assert np.array_equal(a, b)


def test_box_mean_matches_brute_force():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 53)).astype(np.float32)
    a[5:9, 10:30] = np.nan
    r = 4
    m = inputs.box_mean(a, r)
    for y, x in [(0, 0), (7, 15), (20, 20), (39, 52), (6, 12)]:
        win = a[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
        assert m[y, x] == pytest.approx(np.nanmean(win), rel=1e-6)


@pytest.mark.parametrize("factors,denoise_m", [(["dem"], 0), (["dem", "slope", "rdls"], 0),
                                               (["dem", "slope", "rdls"], 180)])
def test_inputs_do_not_depend_on_the_window(dems, factors, denoise_m):
    """The network input of a cell is the same whether read with the whole raster or in any window
    (with the DEM denoised too: the halo covers the filter's reach)."""
    ds, info = open_raster(dems["vermont"])
    band = ds.GetRasterBand(1)
    px = 90.0
    norms = {f: inputs.default_normalisation(f) for f in factors}
    if denoise_m:
        norms[inputs.DENOISE] = inputs.denoise_rule(denoise_m)
    halo = inputs.halo_pixels(factors, norms, px)
    assert halo >= inputs.local_radius_px(norms["dem"], px)
    if denoise_m:  # the filter's reach on top of the rest
        assert halo == inputs.halo_pixels(factors, {f: norms[f] for f in factors}, px) + 6
    from landform_plugin.core.terrain import window_raster_box

    def chans(win):
        elev = read_window(band, win, info.nodata)
        box = window_raster_box(win, info.width, info.height)
        c, valid = inputs.make_input(elev, win.halo, factors, norms, px, raster_box=box)
        return c, valid

    whole, valid = chans(Window(0, 0, info.width, info.height, halo))
    assert whole.shape == (len(factors), info.height, info.width) and valid.all()
    for x0, y0, w, h in [(0, 0, 64, 64), (100, 37, 80, 96), (173, 150, 64, 38)]:
        part, _ = chans(Window(x0, y0, w, h, halo))
        assert np.allclose(part, whole[:, y0 : y0 + h, x0 : x0 + w], atol=1e-5)


def test_local_mean_normalisation_ignores_absolute_height():
    """A plain at 4500 m and the same plain at 50 m give the same input."""
    rng = np.random.default_rng(2)
    plain = rng.normal(scale=3.0, size=(200, 200)).astype(np.float32)
    rule = inputs.default_normalisation("dem")
    low, _ = inputs.make_input(plain + 50, 0, ["dem"], {"dem": rule}, 90.0)
    high, _ = inputs.make_input(plain + 4500, 0, ["dem"], {"dem": rule}, 90.0)
    assert np.abs(low - high).max() < 1e-3
    assert np.abs(low).max() < 0.05  # 3 m of noise / 500 m


def test_nodata_is_filled_from_its_edge_up_to_the_reach_and_stays_invalid():
    """A void in a tilted plane is filled with the plane (the network sees the terrain go on,
    not a flat plate with a cliff around it); cells farther than VOID_FILL_M from any elevation
    get FILL_VALUE; NoData cells stay out of the valid mask either way."""
    px = 90.0
    reach = inputs.fill_reach_px(px)
    assert reach == 23  # 2 km at 90 m
    yy, xx = np.mgrid[0:300, 0:300].astype(np.float32)
    plane = 1000.0 + 3.0 * xx + 1.0 * yy
    a = plane.copy()
    a[40:60, 40:60] = np.nan  # a 1.8 km void
    a[100:300, 100:300] = np.nan  # a corner of NoData 18 km wide
    rule = inputs.default_normalisation("dem")
    c, valid = inputs.make_input(a, 0, ["dem"], {"dem": rule}, px)
    assert (valid == np.isfinite(a)).all()
    filled = inputs.fill_voids(a, px)
    assert np.isfinite(filled[40:60, 40:60]).all()
    err = np.abs(filled[40:60, 40:60] - plane[40:60, 40:60])
    flat = np.abs(plane[40:60, 40:60].mean() - plane[40:60, 40:60])  # a plate at the void's true mean height
    assert err.mean() < 0.4 * flat.mean() and err.max() < 0.5 * flat.max()
    assert np.isfinite(filled[100 : 100 + reach, 100:150]).all()  # within reach of the data
    far = np.isnan(filled)
    assert far[150:, 150:].all() and (c[0][far] == inputs.FILL_VALUE).all()
    assert (c[0][~far & ~valid] != inputs.FILL_VALUE).mean() > 0.9  # the filled cells carry terrain
    assert inputs.fill_voids(plane, px) is plane  # nothing to fill: no copy


def test_denoising_steadies_relief_and_slope_under_noise_and_keeps_the_terrain(dems):
    """A Gaussian of one 90 m cell: 3 m of white noise moves the 1 km relief (RDLS) and the slope
    far less than without it, the denoised clean DEM stays close to the DEM, NoData stays NoData
    and does not drag its neighbours down."""
    ds, info = open_raster(dems["vermont"])  # ds held: a band outliving its dataset crashes GDAL
    z = read_window(ds.GetRasterBand(1), Window(0, 0, info.width, info.height, 0), info.nodata)
    assert np.isfinite(z).all()
    noisy = z + np.random.default_rng(0).normal(scale=3.0, size=z.shape).astype(np.float32)
    factors, px = ["dem", "rdls", "slope"], 90.0
    plain = {f: inputs.default_normalisation(f) for f in factors}
    denoised = dict(plain, **{inputs.DENOISE: inputs.denoise_rule(90.0)})
    moved = {}
    for name, norm in (("plain", plain), ("denoised", denoised)):
        a, _ = inputs.make_input(z, 0, factors, norm, px)
        b, _ = inputs.make_input(noisy, 0, factors, norm, px)
        moved[name] = np.abs(a - b)[1:].reshape(2, -1).mean(axis=1)  # rdls, slope
    assert (moved["denoised"] < 0.5 * moved["plain"]).all(), moved
    d = inputs.denoise(z, 1.0)
    assert np.abs(d - z)[5:-5, 5:-5].mean() < 5.0  # metres: the terrain is kept
    holed = z.copy()
    holed[50:60, 50:60] = np.nan
    dh = inputs.denoise(holed, 1.0)
    assert np.isnan(dh[50:60, 50:60]).all() and np.isfinite(dh[:50]).all()
    from scipy.ndimage import gaussian_filter

    zero_filled = gaussian_filter(np.nan_to_num(holed), 1.0, truncate=3.0)  # what an unweighted filter gives
    ours, naive = abs(float(dh[49, 55]) - float(d[49, 55])), abs(float(zero_filled[49, 55]) - float(d[49, 55]))
    assert ours < 10.0 and naive > 10 * ours, (ours, naive)
    with pytest.raises(LandformError, match="positive sigma"):
        inputs.validate_normalisation(factors, dict(plain, **{inputs.DENOISE: {"method": "gaussian", "sigma_m": 0}}))
