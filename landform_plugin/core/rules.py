"""Rule-based landform classes: the first level of China's 1:1,000,000
geomorphological classification (Cheng et al. 2011), as Yang et al. (2023)
use it, computed from a DEM alone.

The rules (every number is a parameter of :class:`RuleParams`)
----------------------------------------------------------------
Relief amplitude R (the "relief degree of land surface", RDLS) is the highest
minus the lowest elevation in a square *local window* centred on the cell.

* **plain**     R < 30 m                            (Cheng et al. 2011)
* **hill**      30 m <= R < 200 m                   (Cheng et al. 2011)
* **mountain**  R >= 200 m                          (Cheng et al. 2011); with
  ``split_mountains`` the four relief classes of the full first level:
  low relief 200-500 m, middle 500-1000 m, high 1000-2500 m, highest >= 2500 m
  (codes in :data:`MOUNTAIN_SPLIT_CLASSES`).
* **platform**  a raised flat surface (terraces, tablelands, mesas): a cell is
  platform when BOTH
    - its surface is flat: the relief in a small *surface window* around it is
      below ``platform_flat_relief_m`` (30 m, the plain threshold: the top of a
      platform is "plain-like"), and
    - it is raised: its elevation is more than ``platform_height_m`` (30 m,
      Cheng et al.'s "relief of more than 30 m" of a platform) above its
      surroundings, taken as the ``surround_percentile`` (10th) percentile of
      the elevations in a wide *surrounding window* (5 km).
  Platform takes precedence over plain, hill and mountain: the flat top of a
  mesa next to a 500 m cliff has a large R in the local window, yet it is the
  textbook platform.

Why these windows
-----------------
The paper gives no window; RDLS studies in China commonly use 2-5 km^2.
The default local window is the low end,
2 km^2, i.e. a square of side sqrt(2) km = 1414 m (15-17 cells of a 3" SRTM
DEM, 47 cells of a 30 m DEM). Larger windows reach across the incised valleys
of low-relief plains: with a 4 km^2 window the Fort Worth prairie (a plain
dissected by 30-50 m valleys) comes out 66 % hill, with 2 km^2 it is 65 % plain
by relief (60 % once platforms are taken out).

The surface window (500 m, 0.25 km^2) is smaller than the local window because
platform tops are often narrower than 1.4 km (mesas, river terraces, dissected
tablelands): with flatness tested in the 2 km^2 window and the raised test
above, the Zion plateaus got ~0 % platform and the whole collection 0.3 %
(measured), against 10.5 % in the paper's sample. With the
500 m surface window (native 3" grids): Zion 7.5 %, Dead Sea / Moab tableland
13.5 %, Fort Worth 12.6 %, San Gabriel Mountains 0.2 %; over the chips of the
default model's 13 training DEMs (90 m) 11.6 %.

The surroundings are a low percentile, not the minimum, so that one narrow
canyon does not make a whole plain "raised" (with the minimum in 5 km, 26 % of
the Fort Worth prairie became platform; with the 10th percentile 10 %).

Windows in metres become windows in cells with the raster's cell size at its
central row, separately across (x) and along (y) the rows, rounded to the
nearest odd number of cells (at least 3): the window stays about square in
metres on geographic CRSs. On a raster spanning many degrees of latitude the
east-west size drifts (a warning is logged when cell widths vary by more than
10 %); reproject such rasters to a projected CRS first.

Implementation
--------------
Block by block with a halo (bounded memory: a few 512 x 512 blocks plus halo),
relief by ``terrain.rdls_filter`` (running max/min by repeated doubling,
measured 3-4x faster than scipy's maximum_filter1d). The percentile of the
surrounding window is computed on block means of s x s cells, with s chosen so
that the window spans about 15 such cells, aligned to the raster's origin (so
the result does not depend on the block layout), and interpolated bilinearly
back to the cells: an approximation of the exact percentile filter that costs
a few hundredths of it. NoData cells and cells outside the raster are ignored
in every window; they get class 0.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from osgeo import gdal

from . import labels, rasters, terrain
from .errors import LandformError
from .outputs import OutputSet
from .progress import Progress
from .schema import add_cli_options, from_cli, option

CHENG_CITATION = (
    "Cheng, W., Zhou, C., Li, B., Shen, Y., Zhang, B. (2011). Structure and contents of layered "
    "classification system of digital geomorphology for China. Journal of Geographical Sciences "
    "21(5), 771-790."
)

PLAIN, PLATFORM, HILL, MOUNTAIN = 1, 2, 3, 4

# Codes written with split_mountains=True: 0-3 as in labels.DEFAULT_CLASSES, then the
# four relief classes of mountains of the full first level (Cheng et al. 2011).
MOUNTAIN_SPLIT_CLASSES: List[labels.LandformClass] = list(labels.DEFAULT_CLASSES[:4]) + [
    labels.LandformClass(4, "Low relief mountain (200-500 m)", (205, 133, 63)),
    labels.LandformClass(5, "Middle relief mountain (500-1000 m)", (165, 42, 42)),
    labels.LandformClass(6, "High relief mountain (1000-2500 m)", (110, 30, 30)),
    labels.LandformClass(7, "Highest relief mountain (>= 2500 m)", (60, 20, 40)),
]


def _metres(default: float, key: str, label: str, advanced: bool = False):
    return option(default, key, label, minimum=0.0, maximum=1e9, advanced=advanced)


@dataclass
class RuleParams:
    """Thresholds (m) and windows (m) of the rules; defaults as published (see module doc)."""

    # In the order the Processing algorithm shows them.
    platform: bool = option(True, "PLATFORM", "Detect platforms")
    split_mountains: bool = option(False, "SPLIT_MOUNTAINS", "Split mountains into four relief classes (codes 4-7)")
    # side of the square relief window: 2 km^2
    local_window_m: float = _metres(1414.0, "LOCAL_WINDOW", "Local (relief) window side [m]")
    # plain: relief < this; hill: relief < this, mountain >= (Cheng et al. 2011)
    plain_max_relief_m: float = _metres(30.0, "PLAIN_RELIEF", "Plain: relief below [m]")
    hill_max_relief_m: float = _metres(200.0, "HILL_RELIEF", "Hill: relief below [m] (mountain at or above)")
    # raised by more than this above the surroundings
    platform_height_m: float = _metres(30.0, "PLATFORM_HEIGHT", "Platform: raised above its surroundings by more than [m]")
    # surface flat: relief in the surface window < this
    platform_flat_relief_m: float = _metres(30.0, "FLAT_RELIEF", "Platform: surface relief below [m]", True)
    surface_window_m: float = _metres(500.0, "SURFACE_WINDOW", "Platform: surface window side [m]", True)
    surround_window_m: float = _metres(5000.0, "SURROUND_WINDOW", "Platform: surrounding window side [m]", True)
    surround_percentile: float = option(10.0, "SURROUND_PERCENTILE", "Platform: surroundings level (percentile of elevation)",
                                        minimum=0.0, maximum=100.0, advanced=True)
    middle_mountain_relief_m: float = _metres(500.0, "MIDDLE_RELIEF", "Middle relief mountain from [m]", True)
    high_mountain_relief_m: float = _metres(1000.0, "HIGH_RELIEF", "High relief mountain from [m]", True)
    highest_mountain_relief_m: float = _metres(2500.0, "HIGHEST_RELIEF", "Highest relief mountain from [m]", True)

    def validate(self) -> None:
        for name in ("local_window_m", "surface_window_m", "surround_window_m"):
            if not getattr(self, name) > 0:
                raise LandformError(f"The window '{name}' must be a positive number of metres.")
        if not 0 <= self.plain_max_relief_m <= self.hill_max_relief_m:
            raise LandformError(
                f"The plain relief threshold ({self.plain_max_relief_m} m) must not exceed the hill "
                f"threshold ({self.hill_max_relief_m} m)."
            )
        if self.split_mountains and not (
            self.hill_max_relief_m <= self.middle_mountain_relief_m <= self.high_mountain_relief_m
            <= self.highest_mountain_relief_m
        ):
            raise LandformError("Mountain relief thresholds must increase: hill <= middle <= high <= highest.")
        if not 0 <= self.surround_percentile <= 100:
            raise LandformError("The surroundings percentile must lie between 0 and 100.")
        if self.surround_window_m < self.surface_window_m:
            raise LandformError("The surrounding window must be at least as large as the surface window.")

    @property
    def classes(self) -> List[labels.LandformClass]:
        return MOUNTAIN_SPLIT_CLASSES if self.split_mountains else list(labels.DEFAULT_CLASSES)


# ----------------------------------------------------------------------------- kernels


def relief(dem: np.ndarray, size_y: int, size_x: int) -> np.ndarray:
    """Max - min elevation in a centred (size_y x size_x) window (odd sizes), NaN ignored.

    Same shape as ``dem``; cells beyond its edges count as NaN; cells whose whole
    window is NaN get NaN. Uses ``terrain.rdls_filter`` (running max/min by
    repeated doubling), the project's one RDLS kernel.
    """
    ry, rx = size_y // 2, size_x // 2
    padded = np.full((dem.shape[0] + 2 * ry, dem.shape[1] + 2 * rx), np.nan, dtype=np.float32)
    padded[ry : ry + dem.shape[0], rx : rx + dem.shape[1]] = dem
    with np.errstate(invalid="ignore"):
        return terrain.rdls_filter(padded, (size_y, size_x)).astype(np.float32, copy=False)


def _block_means(a: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """NaN-aware means of whole sy x sx blocks (a's shape must be a multiple)."""
    h, w = a.shape[0] // sy, a.shape[1] // sx
    v = a.reshape(h, sy, w, sx)
    ok = ~np.isnan(v)
    n = ok.sum(axis=(1, 3))
    s = np.where(ok, v, 0).sum(axis=(1, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan).astype(np.float32)


def _window_percentile(c: np.ndarray, ky: int, kx: int, q: float) -> np.ndarray:
    """Percentile q of the valid values in each (ky x kx) window (valid positions only)."""
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(c, (ky, kx))
    oh, ow = win.shape[:2]
    flat = np.sort(win.reshape(oh, ow, ky * kx), axis=-1)  # NaN sorts last
    n = np.sum(~np.isnan(flat), axis=-1)
    pos = (q / 100.0) * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    frac = (pos - lo).astype(np.float32)
    vlo = np.take_along_axis(flat, lo[..., None], axis=-1)[..., 0]
    vhi = np.take_along_axis(flat, hi[..., None], axis=-1)[..., 0]
    out = vlo + frac * (vhi - vlo)
    out[n == 0] = np.nan
    return out


def _bilinear_weights(start: int, count: int, s: int, c0: int) -> Tuple[np.ndarray, np.ndarray]:
    """For cells start..start+count-1 along one axis: index (relative to coarse cell c0)
    of the coarse cell centre at or before each cell's centre, and the weight of the next."""
    pos = (np.arange(start, start + count) + 0.5) / s - 0.5
    i0 = np.floor(pos).astype(np.int64)
    return i0 - c0, (pos - i0).astype(np.float32)


def _interp(coarse: np.ndarray, iy, wy, ix, wx) -> np.ndarray:
    """Bilinear interpolation that ignores NaN corners (weights renormalised)."""
    out = np.zeros((len(iy), len(ix)), dtype=np.float32)
    wsum = np.zeros_like(out)
    for dy, fy in ((0, 1 - wy), (1, wy)):
        for dx, fx in ((0, 1 - wx), (1, wx)):
            v = coarse[np.ix_(iy + dy, ix + dx)]
            w = fy[:, None] * fx[None, :]
            ok = ~np.isnan(v)
            out += np.where(ok, v, 0) * np.where(ok, w, 0)
            wsum += np.where(ok, w, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(wsum > 0, out / np.maximum(wsum, 1e-12), np.nan).astype(np.float32)


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class WindowCells:
    """The rules' windows in cells for one raster."""

    cell_x_m: float
    cell_y_m: float
    local: Tuple[int, int]  # (y, x)
    surface: Tuple[int, int]
    surround: Tuple[int, int]
    coarse_step: Tuple[int, int]  # (sy, sx) block-mean step for the percentile
    coarse_window: Tuple[int, int]  # surrounding window in coarse cells (odd)
    halo: int

    def describe(self) -> str:
        return (
            f"cell {self.cell_x_m:.1f} x {self.cell_y_m:.1f} m; windows in cells (x by y): "
            f"local {self.local[1]}x{self.local[0]}, surface {self.surface[1]}x{self.surface[0]}, "
            f"surroundings {self.surround[1]}x{self.surround[0]} "
            f"(percentile on {self.coarse_step[1]}x{self.coarse_step[0]}-cell means, "
            f"{self.coarse_window[1]}x{self.coarse_window[0]} of them)"
        )


def window_cells(info: rasters.RasterInfo, params: RuleParams) -> WindowCells:
    dx, dy = rasters.cell_sizes_m(info, info.height // 2, 1)
    cx, cy = float(dx[0]), float(dy[0])
    if not (cx > 0 and cy > 0 and math.isfinite(cx) and math.isfinite(cy)):
        raise LandformError(f"'{info.path}' has an invalid cell size; check its geotransform.")
    local = terrain.rdls_window_pixels(params.local_window_m, (cx, cy))  # (rows, cols), odd, >= 3
    surface = terrain.rdls_window_pixels(params.surface_window_m, (cx, cy))
    surround = terrain.rdls_window_pixels(params.surround_window_m, (cx, cy))
    step = (max(1, int(round(surround[0] / 15))), max(1, int(round(surround[1] / 15))))
    cw = tuple(max(3, (int(round(surround[i] / step[i])) // 2) * 2 + 1) for i in range(2))
    need = max(
        local[0] // 2, local[1] // 2, surface[0] // 2, surface[1] // 2,
        step[0] * (cw[0] // 2 + 3), step[1] * (cw[1] // 2 + 3),
    ) if params.platform else max(local[0] // 2, local[1] // 2)
    return WindowCells(cx, cy, local, surface, surround, step, cw, int(need))


# ----------------------------------------------------------------------------- classes


def classify_block(dem: np.ndarray, win: rasters.Window, wc: WindowCells, params: RuleParams) -> np.ndarray:
    """Classes (uint8) for the inner part of a block read with ``win.halo``.

    ``dem`` is the float32 block with its halo, NaN for NoData and outside the
    raster, and must start at raster cell (win.x0 - halo, win.y0 - halo).
    """
    h = win.halo
    inner = (slice(h, h + win.height), slice(h, h + win.width))
    z = dem[inner]
    valid = ~np.isnan(z)
    r = relief(dem, *wc.local)[inner]
    out = np.zeros(z.shape, dtype=np.uint8)
    out[valid] = MOUNTAIN
    with np.errstate(invalid="ignore"):
        out[valid & (r < params.hill_max_relief_m)] = HILL
        out[valid & (r < params.plain_max_relief_m)] = PLAIN
        if params.split_mountains:
            out[valid & (r >= params.middle_mountain_relief_m)] = 5
            out[valid & (r >= params.high_mountain_relief_m)] = 6
            out[valid & (r >= params.highest_mountain_relief_m)] = 7
    if params.platform:
        flat = relief(dem, *wc.surface)[inner] < params.platform_flat_relief_m
        base = surroundings_level(dem, win, wc, params.surround_percentile)
        with np.errstate(invalid="ignore"):
            raised = (z - base) > params.platform_height_m
        out[valid & flat & raised] = PLATFORM
    return out


def surroundings_level(dem: np.ndarray, win: rasters.Window, wc: WindowCells, q: float) -> np.ndarray:
    """The q-th percentile of elevation in the surrounding window, for the block's inner cells.

    Computed on sy x sx block means aligned to the raster origin (coarse cell
    (i, j) covers raster rows i*sy..(i+1)*sy-1), so every block sees the same
    coarse grid; then interpolated bilinearly to the cells.
    """
    sy, sx = wc.coarse_step
    ky, kx = wc.coarse_window
    h = win.halo
    oy, ox = win.y0 - h, win.x0 - h  # raster coordinates of dem[0, 0]
    cy0, cx0 = -(-oy // sy), -(-ox // sx)  # first coarse cell fully inside the read area
    cy1, cx1 = (oy + dem.shape[0]) // sy, (ox + dem.shape[1]) // sx  # one past the last
    sub = dem[cy0 * sy - oy : cy1 * sy - oy, cx0 * sx - ox : cx1 * sx - ox]
    coarse = _block_means(sub, sy, sx)
    pct = _window_percentile(coarse, ky, kx, q)  # centres at coarse cells cy0+ky//2.., cx0+kx//2..
    iy, wy = _bilinear_weights(win.y0, win.height, sy, cy0 + ky // 2)
    ix, wx = _bilinear_weights(win.x0, win.width, sx, cx0 + kx // 2)
    if iy.min() < 0 or ix.min() < 0 or iy.max() + 1 >= pct.shape[0] or ix.max() + 1 >= pct.shape[1]:
        raise AssertionError("halo too small for the surrounding window")  # programming error
    return _interp(pct, iy, wy, ix, wx)


def classify_array(dem: np.ndarray, info: rasters.RasterInfo, params: Optional[RuleParams] = None) -> np.ndarray:
    """Classify a whole in-memory DEM (NaN = NoData) of the raster ``info`` describes."""
    params = params or RuleParams()
    params.validate()
    wc = window_cells(info, params)
    win = rasters.Window(0, 0, dem.shape[1], dem.shape[0], wc.halo)
    padded = np.full((dem.shape[0] + 2 * wc.halo, dem.shape[1] + 2 * wc.halo), np.nan, dtype=np.float32)
    padded[wc.halo : wc.halo + dem.shape[0], wc.halo : wc.halo + dem.shape[1]] = dem
    return classify_block(padded, win, wc, params)


def classify_raster(
    dem_path: str,
    out_path: str,
    params: Optional[RuleParams] = None,
    band: int = 1,
    progress: Optional[Progress] = None,
    block_size: int = 512,
) -> Dict[str, object]:
    """Classify ``dem_path`` by the rules and write a Byte GeoTIFF of classes to ``out_path``.

    Output: same size, geotransform and CRS as the DEM; NoData value 0 (class
    0, "no data") where the DEM is NoData; a colour table and category names
    from the class scheme. Returns the class shares (percent of valid cells)
    and the windows used.
    """
    params = params or RuleParams()
    params.validate()
    progress = progress or Progress()
    ds, info = rasters.open_raster(dem_path, band)
    rasters.require_crs(info)
    rasters.require_some_data(ds, info)
    wc = window_cells(info, params)
    dx_all, _ = rasters.cell_sizes_m(info)
    if info.is_geographic and dx_all.max() > 1.1 * dx_all.min():
        progress.info(
            "Warning: cell widths vary by more than 10 % across this geographic raster; the windows are sized "
            "at its central row. Reproject it to a projected CRS for exact window sizes."
        )
    progress.info("Rule-based landforms: " + wc.describe())
    src = ds.GetRasterBand(band)
    # Block sizes multiple of the coarse steps keep the work per block even; the coarse
    # grid is aligned to the raster origin whatever the block layout.
    by = max(wc.coarse_step[0], (block_size // wc.coarse_step[0]) * wc.coarse_step[0])
    bx = max(wc.coarse_step[1], (block_size // wc.coarse_step[1]) * wc.coarse_step[1])
    windows = rasters.block_windows(info.width, info.height, bx, by, wc.halo)
    ncls = len(params.classes)
    counts = np.zeros(max(ncls, 8), dtype=np.int64)
    table = [(c.code, c.color, c.name) for c in params.classes]
    with OutputSet(inputs=[dem_path]) as out:
        writer = rasters.GeoTiffWriter(out_path, info, outputs=out, bands=1, data_type=gdal.GDT_Byte, nodata=labels.NODATA_CLASS,
                                        band_names=["landform class (rules)"], color_table=table)
        for i, win in enumerate(windows):
            progress.check()
            dem = rasters.read_window(src, win, info.nodata)
            cls = classify_block(dem, win, wc, params)
            writer.write(cls, win.x0, win.y0)
            counts += np.bincount(cls.ravel(), minlength=counts.size)[: counts.size]
            progress.update(100.0 * (i + 1) / len(windows))
    valid = counts[1:].sum()
    shares = {c.name: (100.0 * counts[c.code] / valid if valid else 0.0) for c in params.classes if c.code}
    return {"shares": shares, "windows": wc, "valid_cells": int(valid)}


# ----------------------------------------------------------------------------- CLI


def _cli(args) -> int:
    params = from_cli(RuleParams, args)
    from . import block_jobs, blocks

    if block_jobs.engine_requested(args):
        shares = block_jobs.rule_classes(args.dem, args.out, blocks.engine_from_args(args), args.band, params,
                                         args.block_size, args.cog, blocks.ConsoleProgress())
        for name, share in shares.items():
            print(f"{name:40s} {share:6.2f} %")
        return 0
    res = classify_raster(args.dem, args.out, params, band=args.band, progress=Progress(log=print))
    for name, share in res["shares"].items():
        print(f"{name:40s} {share:6.2f} %")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("rules", help="rule-based landform classes (Cheng et al. 2011 first level) of a DEM")
    p.add_argument("dem")
    p.add_argument("out")
    p.add_argument("--band", type=int, default=1)
    add_cli_options(p, RuleParams)
    from . import blocks

    blocks.add_engine_args(p)
    p.set_defaults(func=_cli)
