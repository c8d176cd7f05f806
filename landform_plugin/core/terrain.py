"""Terrain factors of the paper (Yang et al. 2023, section 3.1) from a DEM, in plain numpy.

Factors (``FACTOR_NAMES``), units and conventions
-------------------------------------------------
All factors use elevation x ``z_factor`` and cell sizes in metres (per row for
geographic CRSs, from ``rasters.cell_sizes_m``), so a DEM in degrees gives the
same values as its UTM reprojection.

- ``slope``: degrees, 0-90; Horn (1981) 3x3 gradient, as ``gdaldem slope``.
- ``aspect``: degrees clockwise from north (0 = north-facing, 90 = east), the
  direction the slope faces (downslope); Horn (1981) as ``gdaldem aspect``.
  Flat cells (zero gradient) get ``ASPECT_FLAT`` = -1 (the ArcGIS convention;
  gdaldem writes its NoData value -9999 there, we keep flat cells distinct from
  NoData so plains are not holes in a model input).
- ``hillshade``: 1-255 illumination, Horn gradient, sun ``azimuth`` (degrees
  clockwise from north) and ``altitude`` (degrees above the horizon); the
  formula of ``gdaldem hillshade`` (1 + 254 cos(incidence), 1 in shadow).
  In memory it is float; the GeoTIFF is Byte with NoData 0 exactly like gdaldem.
- ``rdls``: relief degree of land surface, metres: max minus min elevation in
  a window of ``rdls_window_m`` metres (``rdls_window_pixels`` turns it into an
  odd number of rows and columns from the cell size). NoData cells and cells
  outside the raster in the window are ignored (the window is clipped there).
- ``curvature`` (surface / general), ``profile_curvature``, ``plan_curvature``:
  Zevenbergen & Thorne (1987) from the 3x3 window, with
  D = z_xx/2, E = z_yy/2, F = z_xy, G = z_x, H = z_y (x east, y north):
  curvature = -2 (D + E) * 100,
  profile   = -2 (D G^2 + E H^2 + F G H) / (G^2 + H^2) * 100,
  plan      = -2 (D H^2 + E G^2 - F G H) / (G^2 + H^2) * 100,
  profile = plan = 0 where the gradient is zero.
  Units: 1/(100 m), i.e. 100 x the second derivative in 1/m (the ArcGIS and
  richdem scaling). Sign: POSITIVE = CONVEX for all three (hilltops, ridges,
  upper slope breaks), negative = concave (valleys, hollows, slope feet).
  Against richdem's TerrainAttribute: curvature == richdem "curvature",
  plan_curvature == richdem "planform_curvature",
  profile_curvature == -(richdem "profile_curvature") (richdem and ArcGIS
  give profile curvature positive for concave). These are the
  Zevenbergen & Thorne / ArcGIS forms without the (1 + p^2 + q^2) terms of
  Evans/Florinsky.

NoData and edges: NaN in, NaN out (written as ``NODATA`` = -9999 in Float32
files). For the 3x3 factors exactly as ``gdaldem -compute_edges``: a NoData
neighbour takes the centre cell's value (richdem's rule too); on the raster's
outermost rows and columns the missing row/column is extrapolated linearly
(2 z_edge - z_inner), so edge cells and cells next to NoData get values.
(richdem copies the centre at raster edges too, so curvatures there differ
from richdem's by design; ours are the less biased.)

In-memory API (for the classifier and the training-chip code)
--------------------------------------------------------------
``compute_factors_block(elev, dx_rows, dy_rows, names, params, crop=0, raster_box=None)``
    ``elev``: 2-D float32 elevations, NaN for NoData and for cells outside the
    raster (what ``rasters.read_window`` returns). ``dx_rows``/``dy_rows``:
    cell width/height in metres for each row of ``elev`` (length
    ``elev.shape[0]``; ``rasters.cell_sizes_m(info, y0 - halo, rows)``), or
    scalars. ``names``: some of ``FACTOR_NAMES``. ``params``: a
    ``FactorParams`` or a dict of its fields (``{}`` = defaults).
    Returns ``{name: float32 array}`` of ``elev``'s shape, or, with
    ``crop=c``, of ``elev[c:-c, c:-c]``'s shape. A value equals the
    whole-raster value when the cell is at least
    ``halo_pixels(names, params, cell_size_m)`` cells inside the array
    border, or when that border is the raster's edge (NaN there); nearer the
    border the array edge is treated like NoData. Pass
    ``raster_box=window_raster_box(win, width, height)`` to get gdaldem's
    linear extrapolation on the raster's true edges (what the file outputs
    hold); without it raster-edge cells use the centre-value rule.
``halo_pixels(names, params=None, cell_size_m=None) -> int``
    Margin to read around a block (1 for the 3x3 factors, half the RDLS
    window for rdls). ``cell_size_m`` (scalar or (dx, dy) in metres) is
    needed only for rdls unless ``params.rdls_window_px`` is set.
``resolve_params(params, cell_size_m) -> FactorParams``
    Fixes the RDLS window in pixels once per raster (with the cell size at
    the raster's central row, ``rasters.cell_sizes_m(info, info.height // 2, 1)``,
    as the file outputs do) so every block uses the same window; pass the
    result to both functions above.
``derive_terrain_factors(dem_path, outputs, ...)``
    The whole-raster, block-by-block writer used by the Processing algorithm
    and ``python -m landform_plugin.core terrain``.
"""
import concurrent.futures
import csv
import math
import os
import time
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import rasters
from .outputs import OutputSet
from .schema import add_cli_options, from_cli, option
from .errors import LandformError
from .progress import Progress

FACTOR_NAMES = ("slope", "aspect", "hillshade", "rdls", "curvature", "profile_curvature", "plan_curvature")
THREE_BY_THREE = ("slope", "aspect", "hillshade", "curvature", "profile_curvature", "plan_curvature")
CURVATURES = ("curvature", "profile_curvature", "plan_curvature")

NODATA = -9999.0  # Float32 outputs
HILLSHADE_NODATA = 0  # Byte hillshade, as gdaldem
ASPECT_FLAT = -1.0

DEFAULT_RDLS_WINDOW_M = 1000.0
BLOCK_ROWS = 512  # measured: ~512 x 2048 blocks are fastest
BLOCK_COLS = 2048
STRIP_PIXELS = 1 << 17  # 3x3 kernels work on strips of ~128k cells (0.5 MB arrays): measured ~1.3-1.7x faster than whole blocks

Number = Union[int, float]


@dataclass(frozen=True)
class FactorParams:
    """Parameters of the factors; defaults are gdaldem's (azimuth 315, altitude 45)."""

    z_factor: float = option(1.0, "Z_FACTOR", "Z-factor (elevation multiplier)", minimum=0.0, maximum=1e6)
    rdls_window_m: float = option(DEFAULT_RDLS_WINDOW_M, "RDLS_WINDOW", "RDLS window side [m]", minimum=0.0, maximum=1e7)
    azimuth: float = option(315.0, "AZIMUTH", "Hillshade sun azimuth [degrees clockwise from north]",
                            minimum=0.0, maximum=360.0, advanced=True)
    altitude: float = option(45.0, "ALTITUDE", "Hillshade sun altitude [degrees]", minimum=0.0, maximum=90.0, advanced=True)
    # (rows, cols), both odd; None = derive from rdls_window_m and the cell size.
    rdls_window_px: Optional[Tuple[int, int]] = None

    @classmethod
    def from_any(cls, params: Union["FactorParams", Mapping, None]) -> "FactorParams":
        if params is None:
            return cls()
        if isinstance(params, FactorParams):
            return params
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(f"unknown terrain factor parameter(s): {sorted(unknown)}")
        kw = dict(params)
        if kw.get("rdls_window_px") is not None:
            kw["rdls_window_px"] = tuple(int(v) for v in kw["rdls_window_px"])
        return cls(**kw)


def _pair(cell_size_m) -> Tuple[float, float]:
    if np.ndim(cell_size_m) == 0:
        v = float(cell_size_m)
        return v, v
    dx, dy = cell_size_m
    return float(dx), float(dy)


def rdls_window_pixels(window_m: float, cell_size_m) -> Tuple[int, int]:
    """(rows, cols) of the RDLS window: window_m / cell size, rounded to the nearest odd number, at least 3."""
    if not window_m or window_m <= 0:
        raise LandformError(f"The RDLS window must be a positive distance in metres (got {window_m}).")
    dx, dy = _pair(cell_size_m)

    def odd(n: float) -> int:
        k = max(1, int(math.floor(n / 2.0 + 0.5)))  # nearest odd 2k+1 to n
        if abs(n - (2 * k - 1)) < abs(n - (2 * k + 1)):
            k -= 1
        return max(3, 2 * k + 1)

    return odd(window_m / dy), odd(window_m / dx)


def resolve_params(params, cell_size_m) -> FactorParams:
    """Fix the RDLS window in pixels for this cell size (dx, dy metres or a scalar)."""
    p = FactorParams.from_any(params)
    if p.rdls_window_px is None:
        p = replace(p, rdls_window_px=rdls_window_pixels(p.rdls_window_m, cell_size_m))
    return p


def _check_names(names: Iterable[str]) -> Tuple[str, ...]:
    names = tuple(names)
    bad = [n for n in names if n not in FACTOR_NAMES]
    if bad:
        raise LandformError(f"Unknown terrain factor(s) {bad}; choose from {', '.join(FACTOR_NAMES)}.")
    return names


def _margins(names: Sequence[str], p: FactorParams) -> Tuple[int, int]:
    """(rows, cols) of context each side that ``names`` need."""
    my = mx = 0
    if any(n in THREE_BY_THREE for n in names):
        my = mx = 1
    if "rdls" in names:
        ry, rx = p.rdls_window_px
        my, mx = max(my, ry // 2), max(mx, rx // 2)
    return my, mx


def halo_pixels(names: Sequence[str], params=None, cell_size_m=None) -> int:
    """Margin (pixels, same on all sides) to read around a block for exact values."""
    names = _check_names(names)
    p = FactorParams.from_any(params)
    if "rdls" in names and p.rdls_window_px is None:
        if cell_size_m is None:
            raise ValueError("halo_pixels needs cell_size_m (or params.rdls_window_px) for rdls")
        p = resolve_params(p, cell_size_m)
    return max(_margins(names, p))


# ----------------------------------------------------------------------------- kernels


def _sub(elev: np.ndarray, crop: int, my: int, mx: int) -> np.ndarray:
    """elev's region [crop-my : n-crop+my] x [crop-mx : ...], NaN-padded where it leaves the array."""
    n, m = elev.shape
    pad_y, pad_x = max(0, my - crop), max(0, mx - crop)
    y0, x0 = max(0, crop - my), max(0, crop - mx)
    sub = elev[y0 : n - y0, x0 : m - x0]
    if pad_y or pad_x:
        sub = np.pad(sub, ((pad_y, pad_y), (pad_x, pad_x)), constant_values=np.nan)
    return sub


def _rows(v, n: int, crop: int) -> np.ndarray:
    """Per-row values for output rows as a float64 column vector (n = rows of elev)."""
    if np.ndim(v) == 0:
        return np.full((n - 2 * crop, 1), float(v))
    v = np.asarray(v, dtype=np.float64).ravel()
    if v.size != n:
        raise ValueError(f"cell-size array has {v.size} rows, elevation block has {n}")
    return v[crop : n - crop, None]


def _neighbours(e: np.ndarray):
    """The 9 views z0..z8 (row-major: z0 NW, z1 N, z2 NE, z3 W, z4 centre, ...) of a 1-cell-padded array.

    Missing neighbours (NaN) take the centre's value (gdaldem -compute_edges).
    """
    h, w = e.shape[0] - 2, e.shape[1] - 2
    views = [e[r : r + h, s : s + w] for r in range(3) for s in range(3)]
    c = views[4]
    if np.isnan(e).any():
        out = []
        for k, v in enumerate(views):
            if k == 4:
                out.append(v)
            else:
                miss = np.isnan(v)
                out.append(np.where(miss, c, v) if miss.any() else v)
        views = out
    return views


def _running(a: np.ndarray, w: int, axis: int, op) -> np.ndarray:
    """op (np.fmax / np.fmin) over windows of length w along axis; output length n - w + 1.

    Repeated doubling (measured fastest): windows of 1, 2, 4, ...
    then one combination of two overlapping power-of-two windows.
    """
    if w <= 1:
        return a
    out, span = a, 1
    while 2 * span <= w:
        n = out.shape[axis]
        out = op(_slice(out, 0, n - span, axis), _slice(out, span, n, axis))
        span *= 2
    if span < w:
        rem = w - span
        n = out.shape[axis]
        out = op(_slice(out, 0, n - rem, axis), _slice(out, rem, n, axis))
    return out


def _slice(a: np.ndarray, start: int, stop: int, axis: int) -> np.ndarray:
    return a[start:stop] if axis == 0 else a[:, start:stop]


def rdls_filter(elev: np.ndarray, window_px: Tuple[int, int]) -> np.ndarray:
    """max - min over a (rows, cols) window of a NaN-padded array; output shrinks by the window.

    NaN cells in the window are ignored; the caller masks NaN centres.
    """
    wy, wx = window_px
    n, m = elev.shape
    rows, cols = n - wy + 1, m - wx + 1
    # Columns are independent in the vertical pass and rows in the horizontal
    # one: both run on cache-sized strips (same values, fewer cache misses).
    hi = np.empty((rows, m), dtype=elev.dtype)
    lo = np.empty((rows, m), dtype=elev.dtype)
    step = max(8, STRIP_PIXELS // max(1, n))
    for c in range(0, m, step):
        part = elev[:, c : c + step]
        hi[:, c : c + step] = _running(part, wy, 0, np.fmax)
        lo[:, c : c + step] = _running(part, wy, 0, np.fmin)
    out = np.empty((rows, cols), dtype=elev.dtype)
    step = max(1, STRIP_PIXELS // max(1, m))
    for r in range(0, rows, step):
        out[r : r + step] = _running(hi[r : r + step], wx, 1, np.fmax)
        out[r : r + step] -= _running(lo[r : r + step], wx, 1, np.fmin)
    return out


def compute_factors_block(
    elev: np.ndarray,
    dx_rows,
    dy_rows,
    names: Sequence[str],
    params=None,
    crop: int = 0,
    raster_box: Optional[Tuple[int, int, int, int]] = None,
) -> Dict[str, np.ndarray]:
    """Terrain factors of one block (see the module docstring for the contract).

    ``raster_box=(row0, row1, col0, col1)``: where the raster lies in ``elev``
    (``elev[row0:row1, col0:col1]``, indices may lie outside the array; see
    ``window_raster_box``). With it, the 3x3 factors on the raster's first and
    last rows and columns use gdaldem's -compute_edges rule (the missing
    row/column extrapolated linearly, 2 z0 - z1); without it a missing
    neighbour always takes the centre value.
    """
    names = _check_names(names)
    elev = np.asarray(elev)
    if elev.ndim != 2:
        raise ValueError("elev must be a 2-D array")
    n, m = elev.shape
    crop = int(crop)
    if 2 * crop >= min(n, m):
        raise ValueError(f"crop {crop} leaves nothing of a {n} x {m} block")
    p = FactorParams.from_any(params)
    if "rdls" in names and p.rdls_window_px is None:
        c = n // 2
        dxc = float(dx_rows if np.ndim(dx_rows) == 0 else np.asarray(dx_rows).ravel()[c])
        dyc = float(dy_rows if np.ndim(dy_rows) == 0 else np.asarray(dy_rows).ravel()[c])
        p = resolve_params(p, (dxc, dyc))
    z = np.float32(p.z_factor)
    if elev.dtype != np.float32:
        elev = elev.astype(np.float32)
    if z != 1:
        elev = elev * z
    out: Dict[str, np.ndarray] = {}
    three = [k for k in names if k in THREE_BY_THREE]
    if three:
        e = _sub(elev, crop, 1, 1)
        dx = _rows(dx_rows, n, crop)
        dy = _rows(dy_rows, n, crop)
        rows_out = e.shape[0] - 2
        step = max(1, STRIP_PIXELS // max(1, e.shape[1]))
        if step >= rows_out:
            out.update(_three_by_three(_neighbours(e), dx, dy, three, p))
        else:
            # Strips of ~STRIP_PIXELS keep the ~30 temporaries in cache.
            for k in three:
                out[k] = np.empty((rows_out, e.shape[1] - 2), dtype=np.float32)
            for r in range(0, rows_out, step):
                r1 = min(rows_out, r + step)
                part = _three_by_three(_neighbours(e[r : r1 + 2]), dx[r:r1], dy[r:r1], three, p)
                for k, v in part.items():
                    out[k][r:r1] = v
        if raster_box is not None:
            _fix_raster_edges(out, elev, dx_rows, dy_rows, three, p, crop, raster_box)
    if "rdls" in names:
        wy, wx = p.rdls_window_px
        e = _sub(elev, crop, wy // 2, wx // 2)
        r = rdls_filter(e, (wy, wx))
        centre = elev[crop : n - crop, crop : m - crop]
        r[np.isnan(centre)] = np.nan
        out["rdls"] = r
    return {k: out[k] for k in names}


def _fill_missing(views):
    c = views[4]
    return [v if k == 4 else np.where(np.isnan(v), c, v) for k, v in enumerate(views)]


def _cell(v, rows) -> np.ndarray:
    if np.ndim(v) == 0:
        return np.full((len(rows), 1), float(v))
    return np.asarray(v, dtype=np.float64).ravel()[rows][:, None]


def _fix_raster_edges(out, elev, dx_rows, dy_rows, names, p, crop, box) -> None:
    """Recompute the raster's outermost rows/columns inside the output with gdaldem's -compute_edges windows."""
    n, m = elev.shape
    r0, r1, c0, c1 = (int(v) for v in box)
    if r1 - r0 < 2 or c1 - c0 < 2:
        return
    orow0, orow1, ocol0, ocol1 = max(crop, r0), min(n - crop, r1), max(crop, c0), min(m - crop, c1)
    if orow0 >= orow1 or ocol0 >= ocol1:
        return

    def interp(a, b):
        return 2.0 * a - b

    def put(rows, cols, views, dx, dy):
        res = _three_by_three(_fill_missing([v.astype(np.float32, copy=False) for v in views]), dx, dy, names, p)
        for k, v in res.items():
            out[k][rows - crop, cols - crop] = v.ravel()

    j = np.arange(ocol0, ocol1)
    # Neighbours stop at the raster's edge and at the array's (the raster may go on beyond it).
    jmin, jmax = np.maximum(j - 1, max(c0, 0)), np.minimum(j + 1, min(c1, m) - 1)
    for edge_row, inner_row, top in ((r0, r0 + 1, True), (r1 - 1, r1 - 2, False)):
        if not orow0 <= edge_row < orow1:
            continue
        l0, l1 = elev[edge_row], elev[inner_row]
        outer = [interp(l0[jmin], l1[jmin]), interp(l0[j], l1[j]), interp(l0[jmax], l1[jmax])]
        inner = [l1[jmin], l1[j], l1[jmax]]
        middle = [l0[jmin], l0[j], l0[jmax]]
        views = outer + middle + inner if top else inner + middle + outer
        rows = np.full(j.shape, edge_row)
        put(rows, j, [v[None, :] for v in views], _cell(dx_rows, [edge_row]), _cell(dy_rows, [edge_row]))
    i = np.arange(max(orow0, r0 + 1), min(orow1, r1 - 1))
    if i.size == 0:
        return
    for edge_col, inner_col, left in ((c0, c0 + 1, True), (c1 - 1, c1 - 2, False)):
        if not ocol0 <= edge_col < ocol1:
            continue
        views = []
        for rr in (np.maximum(i - 1, 0), i, np.minimum(i + 1, n - 1)):
            a, b = elev[rr, edge_col], elev[rr, inner_col]
            views += [interp(a, b), a, b] if left else [b, a, interp(a, b)]
        cols = np.full(i.shape, edge_col)
        put(i, cols, [v[:, None] for v in views], _cell(dx_rows, i), _cell(dy_rows, i))


def window_raster_box(win: "rasters.Window", width: int, height: int) -> Tuple[int, int, int, int]:
    """``raster_box`` for an array read by ``rasters.read_window(band, win, ...)`` of a width x height raster."""
    return (win.halo - win.y0, win.halo - win.y0 + height, win.halo - win.x0, win.halo - win.x0 + width)


def _three_by_three(views, dx, dy, names, p: FactorParams) -> Dict[str, np.ndarray]:
    res: Dict[str, np.ndarray] = {}
    if any(k in names for k in ("slope", "aspect", "hillshade")):
        res.update(_horn_factors(views, dx, dy, names, p))
    if any(k in names for k in CURVATURES):
        res.update(_curvatures(views, dx, dy, names))
    return res


def _horn_sum(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a + 2 b + c, one side of Horn's 3x3 gradient, summed in float32 in gdaldem's order
    ((a + b) + b) + c (the order matters for near-flat aspect)."""
    s = a + b
    s += b
    s += c
    return s


def _horn_factors(views, dx, dy, names, p: FactorParams) -> Dict[str, np.ndarray]:
    """Slope, aspect and hillshade from Horn's (1981) 3x3 gradient, as gdaldem computes them."""
    z0, z1, z2, z3, z4, z5, z6, z7, z8 = views
    f32 = np.float32
    res: Dict[str, np.ndarray] = {}
    left, right = _horn_sum(z0, z3, z6), _horn_sum(z2, z5, z8)
    top, bottom = _horn_sum(z0, z1, z2), _horn_sum(z6, z7, z8)
    ew = right - left  # 8 * dx * dz/dx (east positive)
    ns = top - bottom  # 8 * dy * dz/dy (north positive)
    del left, right, top, bottom
    gx = ew * (1.0 / (8.0 * dx)).astype(f32)
    gy = ns * (1.0 / (8.0 * dy)).astype(f32)
    if "slope" in names or "hillshade" in names:
        g2 = gx * gx
        g2 += gy * gy
    if "slope" in names:
        s = np.sqrt(g2)
        np.arctan(s, out=s)
        s *= f32(180.0 / math.pi)
        res["slope"] = s
    if "aspect" in names:
        # gdaldem: atan2(dy, -dx) with dy = bottom - top, dx = right - left.
        # Unscaled sums on square cells, exactly as gdaldem; else y scaled by dx/dy.
        ratio = dx / dy
        yy = np.negative(ns) if np.all(ratio == 1.0) else ns * (-ratio).astype(f32)
        with np.errstate(invalid="ignore"):
            a = np.arctan2(yy, np.negative(ew))
            del yy
            a *= f32(180.0 / math.pi)
            np.subtract(f32(90.0), a, out=a)  # gdaldem: 90 - a, or 450 - a where a > 90
            a += (a < 0) * f32(360.0)
            a -= (a == 360.0) * f32(360.0)
            a[(ew == 0) & (ns == 0)] = f32(ASPECT_FLAT)
        res["aspect"] = a
    if "hillshade" in names:
        alt = math.radians(p.altitude)
        az = math.radians(p.azimuth)
        num = gx * f32(math.cos(alt) * math.sin(az))
        num += gy * f32(math.cos(alt) * math.cos(az))
        np.subtract(f32(math.sin(alt)), num, out=num)
        g2 += 1.0
        np.sqrt(g2, out=g2)
        num /= g2
        np.maximum(num, f32(0.0), out=num)  # 1 in shadow (cos <= 0), as gdaldem
        num *= f32(254.0)
        num += f32(1.0)
        res["hillshade"] = num
    return res


def _curvatures(views, dx, dy, names) -> Dict[str, np.ndarray]:
    """Surface, profile and plan curvature (Zevenbergen & Thorne 1987), 1/(100 m), convex positive."""
    z0, z1, z2, z3, z4, z5, z6, z7, z8 = views
    f32 = np.float32
    res: Dict[str, np.ndarray] = {}
    half = f32(0.5)
    D = (z3 + z5) * half
    D -= z4
    D *= (1.0 / (dx * dx)).astype(f32)
    E = (z1 + z7) * half
    E -= z4
    E *= (1.0 / (dy * dy)).astype(f32)
    if "curvature" in names:
        c = D + E
        c *= f32(-200.0)
        res["curvature"] = c
    if "profile_curvature" in names or "plan_curvature" in names:
        F = z2 - z0
        F += z6
        F -= z8
        F *= (0.25 / (dx * dy)).astype(f32)
        G = (z5 - z3) * (0.5 / dx).astype(f32)
        H = (z1 - z7) * (0.5 / dy).astype(f32)
        G2 = G * G
        H2 = H * H
        FGH = F * G
        FGH *= H
        s2 = G2 + H2
        # Zero gradient: G = H = 0 make the numerators exactly 0, so the
        # tiny floor gives 0 there (richdem's value) without masks.
        np.maximum(s2, f32(1e-30), out=s2)
        scale = f32(-200.0) / s2
        if "profile_curvature" in names:
            pr = D * G2
            pr += E * H2
            pr += FGH
            pr *= scale
            res["profile_curvature"] = pr
        if "plan_curvature" in names:
            pl = D * H2
            pl += E * G2
            pl -= FGH
            pl *= scale
            res["plan_curvature"] = pl
    return res


# ----------------------------------------------------------------------------- whole rasters


def _to_file_values(name: str, arr: np.ndarray, inplace: bool = False) -> np.ndarray:
    """What the GeoTIFF holds: NaN -> NODATA (Float32), hillshade rounded to Byte with NoData 0."""
    out = arr.astype(np.float32, copy=not inplace)
    if name == "hillshade":
        np.copyto(out, np.float32(HILLSHADE_NODATA), where=np.isnan(out))
        np.rint(out, out=out)
        return out.astype(np.uint8)
    np.copyto(out, np.float32(NODATA), where=np.isnan(out))
    return out


def check_raster(ds, info: rasters.RasterInfo, names: Sequence[str], params: FactorParams) -> FactorParams:
    """Validate the DEM for these factors; return params with the RDLS window fixed."""
    rasters.require_crs(info)
    if info.width < 3 or info.height < 3:
        raise LandformError(
            f"'{info.path}' is {info.width} x {info.height} pixels; terrain factors need at least 3 x 3 "
            "(they use each cell's 3 x 3 neighbourhood)."
        )
    rasters.require_some_data(ds, info)
    if not math.isfinite(params.z_factor) or params.z_factor <= 0:
        raise LandformError(f"The z-factor must be a positive number (got {params.z_factor}).")
    if not 0 < params.altitude <= 90:
        raise LandformError(f"The sun altitude must be between 0 and 90 degrees (got {params.altitude}).")
    dx, dy = rasters.cell_sizes_m(info, info.height // 2, 1)
    if "rdls" in names:
        params = resolve_params(params, (float(dx[0]), float(dy[0])))
        wy, wx = params.rdls_window_px
        if wy > info.height or wx > info.width:
            raise LandformError(
                f"The RDLS window of {params.rdls_window_m:g} m is {wx} x {wy} pixels at this DEM's "
                f"resolution ({dx[0]:.1f} x {dy[0]:.1f} m), larger than the raster ({info.width} x {info.height} "
                "pixels). Choose a smaller RDLS window."
            )
    return params


def _sample_stride(info: rasters.RasterInfo, max_samples: int) -> int:
    return max(1, int(math.ceil(math.sqrt(info.width * info.height / float(max_samples)))))


def derive_terrain_factors(
    dem_path: str,
    outputs: Mapping[str, str],
    band: int = 1,
    params=None,
    correlation_csv: Optional[str] = None,
    progress: Optional[Progress] = None,
    workers: int = 2,
    block_rows: int = BLOCK_ROWS,
    block_cols: int = BLOCK_COLS,
    max_samples: int = 200_000,
) -> Dict[str, object]:
    """Write the factors named in ``outputs`` ({name: GeoTIFF path}) for band ``band`` of ``dem_path``.

    Block by block with a halo; memory is bounded by the block size, not the
    raster size. A correlation table (Pearson, DEM and all seven factors over
    a regular pixel sample, the paper's Fig. 4) goes to ``correlation_csv``
    when given. Returns {"outputs": {...}, "rdls_window_px": ..., "correlation": ...}.
    Raises LandformError on bad input, Cancelled when ``progress`` says so;
    in both cases no output file is left behind (all outputs or none).
    """
    progress = progress or Progress()
    outputs = {k: v for k, v in dict(outputs).items() if v}
    _check_names(outputs)
    if not outputs and not correlation_csv:
        raise LandformError("Choose at least one output (a terrain factor or the correlation table).")
    p = FactorParams.from_any(params)
    ds, info = rasters.open_raster(dem_path, band)
    names = list(FACTOR_NAMES) if correlation_csv else [n for n in FACTOR_NAMES if n in outputs]
    p = check_raster(ds, info, names, p)
    halo = halo_pixels(names, p)
    windows = rasters.block_windows(info.width, info.height, block_cols, block_rows, halo)
    if "rdls" in names:
        progress.info(f"RDLS window: {p.rdls_window_px[1]} x {p.rdls_window_px[0]} pixels for {p.rdls_window_m:g} m")
    t0 = time.time()
    correlation = None
    with OutputSet(inputs=[dem_path]) as out:
        writers = {name: rasters.GeoTiffWriter(outputs[name], info, outputs=out, **_writer_options(name))
                   for name in FACTOR_NAMES if name in outputs}
        table_tmp = out.file(correlation_csv) if correlation_csv else None
        blocks = _FactorBlocks(ds, info, names, p, halo, writers, _sample_stride(info, max_samples) if table_tmp else 0)
        blocks.run(windows, progress, workers)
        if table_tmp:
            correlation = correlation_table(blocks.samples)
            _write_csv(table_tmp, correlation)
    progress.info(f"Terrain factors for {info.width} x {info.height} pixels in {time.time() - t0:.1f} s")
    return {"outputs": dict(outputs), "rdls_window_px": p.rdls_window_px, "correlation": correlation, "params": p}


def _writer_options(name: str) -> dict:
    from osgeo import gdal

    if name == "hillshade":
        return {"data_type": gdal.GDT_Byte, "nodata": HILLSHADE_NODATA, "band_names": [name]}
    return {"data_type": gdal.GDT_Float32, "nodata": NODATA, "band_names": [name]}


class _FactorBlocks:
    """Reads DEM blocks, computes the factors in a thread pool, writes them in order
    and (``stride`` > 0) samples the values for the correlation table."""

    def __init__(self, ds, info, names, params, halo, writers, stride):
        self.ds, self.info, self.names, self.p, self.halo = ds, info, names, params, halo
        self.writers, self.stride = writers, stride
        self.src = ds.GetRasterBand(info.band)
        self.samples = {k: [] for k in ("dem",) + tuple(names)} if stride else None
        self.elev_by_win = {}
        self.done = 0

    def compute(self, elev, win, dxr, dyr):
        box = window_raster_box(win, self.info.width, self.info.height)
        return compute_factors_block(elev, dxr, dyr, self.names, self.p, crop=self.halo, raster_box=box)

    def finish(self, win, result, progress, total):
        if self.samples is not None:  # before the in-place NoData conversion below
            _collect(self.samples, result, win, self.halo, self.stride, self.elev_by_win.pop((win.x0, win.y0)))
        for name, w in self.writers.items():
            w.write(_to_file_values(name, result[name], inplace=True), win.x0, win.y0)
        self.done += 1
        if win.x0 + win.width >= self.info.width:
            # A whole row of blocks is done: let GDAL compress and release its tiles.
            for w in self.writers.values():
                w.flush()
            self.ds.FlushCache()
        progress.update(100.0 * self.done / total)

    def read(self, win):
        h = self.halo
        elev = rasters.read_window(self.src, win, self.info.nodata)
        if self.samples is not None:
            self.elev_by_win[(win.x0, win.y0)] = elev[h : h + win.height, h : h + win.width]
        dxr, dyr = rasters.cell_sizes_m(self.info, win.y0 - h, win.height + 2 * h)
        return elev, dxr, dyr

    def run(self, windows, progress, workers: int) -> None:
        if workers <= 1:
            for win in windows:
                progress.check()
                self.finish(win, self.compute(*self._args(win)), progress, len(windows))
            return
        pending = deque()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        try:
            for win in windows:
                progress.check()
                pending.append((win, pool.submit(self.compute, *self._args(win))))
                while len(pending) > workers:
                    w0, fut = pending.popleft()
                    self.finish(w0, fut.result(), progress, len(windows))
            while pending:
                progress.check()
                w0, fut = pending.popleft()
                self.finish(w0, fut.result(), progress, len(windows))
        finally:
            for _, fut in pending:
                fut.cancel()
            pool.shutdown(wait=True)

    def _args(self, win):
        elev, dxr, dyr = self.read(win)
        return elev, win, dxr, dyr


def _collect(samples, result, win, halo, stride, elev_core):
    r0 = (-win.y0) % stride
    c0 = (-win.x0) % stride
    samples["dem"].append(elev_core[r0::stride, c0::stride].ravel())
    for k, arr in result.items():
        v = arr[r0::stride, c0::stride].ravel()
        if k == "aspect":
            v = np.where(v == ASPECT_FLAT, np.nan, v)  # undefined on flats
        samples[k].append(v)


def correlation_table(samples: Mapping[str, Sequence[np.ndarray]]) -> Dict[str, object]:
    """Pearson correlation matrix of the sampled layers (pairwise complete cases)."""
    names = list(samples)
    cols = {k: np.concatenate(list(v)).astype(np.float64) if len(v) else np.empty(0) for k, v in samples.items()}
    mat = np.full((len(names), len(names)), np.nan)
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if j < i:
                mat[i, j], counts[i, j] = mat[j, i], counts[j, i]
                continue
            x, y = cols[a], cols[b]
            ok = np.isfinite(x) & np.isfinite(y)
            counts[i, j] = int(ok.sum())
            if counts[i, j] > 2:
                xs, ys = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
                den = math.sqrt(float((xs * xs).sum()) * float((ys * ys).sum()))
                mat[i, j] = float((xs * ys).sum()) / den if den > 0 else np.nan
    return {"names": names, "matrix": mat, "counts": counts}


def _write_csv(path: str, table) -> None:
    names = table["names"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["factor"] + names + ["n_pixels"])
        for i, a in enumerate(names):
            row = ["" if not np.isfinite(v) else f"{v:.4f}" for v in table["matrix"][i]]
            w.writerow([a] + row + [int(table["counts"][i, i])])


# ----------------------------------------------------------------------------- command line


def register_cli(subparsers) -> None:
    ap = subparsers.add_parser("terrain", help="derive terrain factors (slope, aspect, hillshade, RDLS, curvatures) from a DEM")
    ap.add_argument("dem", help="DEM raster (any GDAL format)")
    ap.add_argument("outdir", help="folder for <factor>.tif outputs")
    ap.add_argument("--band", type=int, default=1)
    ap.add_argument("--factors", default=",".join(FACTOR_NAMES), help="comma-separated subset of " + ",".join(FACTOR_NAMES))
    add_cli_options(ap, FactorParams)
    ap.add_argument("--correlation", default=None, help="write the factor correlation table (CSV) here")
    ap.add_argument("--workers", type=int, default=2)
    from . import blocks

    blocks.add_engine_args(ap)
    ap.set_defaults(func=_cli)


def _cli(args) -> int:
    names = [n.strip() for n in args.factors.split(",") if n.strip()]
    _check_names(names)
    outputs = {n: os.path.join(args.outdir, f"{n}.tif") for n in names}
    params = from_cli(FactorParams, args)
    from . import block_jobs, blocks

    if block_jobs.engine_requested(args):
        if args.correlation:
            raise LandformError("The correlation table needs one pass on one machine: run it without --scheduler.")
        written = block_jobs.terrain_factors(args.dem, outputs, blocks.engine_from_args(args), args.band, params,
                                             args.block_size, args.cog, blocks.ConsoleProgress())
        for n, path in written.items():
            print(f"{n}: {path}")
        return 0
    res = derive_terrain_factors(
        args.dem, outputs, band=args.band, params=params, correlation_csv=args.correlation,
        progress=Progress(log=print), workers=args.workers,
    )
    for n, path in res["outputs"].items():
        print(f"{n}: {path}")
    return 0
