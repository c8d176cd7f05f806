"""Tile plans, blending weights, the row-strip blender, and tile-independent input normalisation."""
import numpy as np
import pytest

from landform_plugin.core import inputs
from landform_plugin.core.errors import LandformError
from landform_plugin.core.rasters import Window, open_raster, read_window
from landform_plugin.core.tiling import Blender, hann, plan_tiles, tile_weights


@pytest.mark.parametrize("size", [(1, 1), (31, 45), (600, 323), (1000, 1000), (1197, 643)])
@pytest.mark.parametrize("tile,overlap,pad", [(256, 0.25, 64), (128, 0.5, 0), (512, 0.0, 32)])
def test_plan_covers_raster_with_stride_aligned_offsets(size, tile, overlap, pad):
    w, h = size
    plan = plan_tiles(w, h, tile, overlap, 32, pad)
    assert plan.tile_w % 32 == 0 and plan.tile_h % 32 == 0
    assert all((x + pad) % 32 == 0 for x in plan.xs) and all((y + pad) % 32 == 0 for y in plan.ys)
    assert plan.xs[0] == -pad and plan.ys[0] == -pad
    assert plan.xs[-1] + plan.tile_w >= w and plan.ys[-1] + plan.tile_h >= h
    assert plan.xs[-1] < w and plan.ys[-1] < h  # every tile holds raster cells
    steps = np.diff(plan.xs)
    assert (steps <= plan.tile_w).all()  # no gaps
    if w + 2 * pad <= tile:  # smaller than one tile: one whole-raster pass
        assert len(plan.xs) == 1


def test_plan_refuses_bad_values():
    with pytest.raises(LandformError, match="multiple of 32"):
        plan_tiles(100, 100, 100, 0.25)
    with pytest.raises(LandformError, match="overlap"):
        plan_tiles(100, 100, 128, 0.9)
    with pytest.raises(LandformError, match="empty"):
        plan_tiles(0, 10, 128, 0.25)


def test_hann_weights_positive_and_edge_aware():
    w = hann(256)
    assert w.min() > 0 and abs(w.max() - 1) < 1e-3 and np.allclose(w, w[::-1])
    plan = plan_tiles(1000, 700, 256, 0.25, 32, 64)
    first = tile_weights(plan, plan.tiles()[0])
    assert first[:128, :128].min() == 1.0  # raster-edge side not tapered
    mid = tile_weights(plan, plan.row_tiles(1)[1])
    assert mid[0, 0] < 1e-3 and mid[128, 128] > 0.99


def test_blender_reproduces_a_smooth_field_exactly():
    """Blending tiles cut from one field returns that field (weights normalise) in bounded strips."""
    rng = np.random.default_rng(0)
    w, h = 733, 517
    field = rng.random((3, h, w)).astype(np.float32)
    plan = plan_tiles(w, h, 128, 0.25, 32, 64)
    blender = Blender(plan, 3)
    out = np.full((3, h, w), np.nan, np.float32)
    for r in range(len(plan.ys)):
        for t in plan.row_tiles(r):
            tile = np.zeros((3, plan.tile_h, plan.tile_w), np.float32)
            ys, xs = max(0, t.y0), max(0, t.x0)
            ye, xe = min(h, t.y0 + t.height), min(w, t.x0 + t.width)
            tile[:, ys - t.y0 : ye - t.y0, xs - t.x0 : xe - t.x0] = field[:, ys:ye, xs:xe]
            blender.add(t, tile)
        y0, probs = blender.finish_row(r)
        if probs is not None:
            assert np.isnan(out[:, y0 : y0 + probs.shape[1]]).all()  # each row emitted once
            out[:, y0 : y0 + probs.shape[1]] = probs
    assert not np.isnan(out).any()
    assert np.abs(out - field).max() < 1e-5
    assert blender.acc.shape == (3, plan.tile_h, w)  # memory: one strip


def test_box_mean_matches_brute_force():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 53)).astype(np.float32)
    a[5:9, 10:30] = np.nan
    r = 4
    m = inputs.box_mean(a, r)
    for y, x in [(0, 0), (7, 15), (20, 20), (39, 52), (6, 12)]:
        win = a[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
        assert m[y, x] == pytest.approx(np.nanmean(win), rel=1e-6)


@pytest.mark.parametrize("factors", [["dem"], ["dem", "slope", "rdls"]])
def test_inputs_do_not_depend_on_the_window(dems, factors):
    """The network input of a cell is the same whether read with the whole raster or in any window."""
    ds, info = open_raster(dems["vermont"])
    band = ds.GetRasterBand(1)
    px = 90.0
    norms = {f: inputs.default_normalisation(f) for f in factors}
    halo = inputs.halo_pixels(factors, norms, px)
    assert halo >= inputs.local_radius_px(norms["dem"], px)
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


def test_nodata_gets_fill_value():
    a = np.full((50, 50), 100.0, np.float32)
    a[10:20, 10:20] = np.nan
    c, valid = inputs.make_input(a, 0, ["dem"], {"dem": inputs.default_normalisation("dem")}, 30.0)
    assert not valid[10:20, 10:20].any() and valid.sum() == 2500 - 100
    assert (c[0, 10:20, 10:20] == inputs.FILL_VALUE).all()
