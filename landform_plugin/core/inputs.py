"""Turning a DEM window (with its halo) into the network's input channels.

Factors
-------
``"dem"`` is elevation itself; any other name is a terrain factor computed by
``core.terrain.compute_factors_block`` (slope, hillshade, ...), which needs a
halo of its own (``terrain.halo_pixels``).

Normalisation: the rule and why
-------------------------------
Per-tile statistics (tile min/max, tile mean/std) make a pixel's input depend
on where its tile starts: neighbouring tiles disagree and seams appear (the
main source of seams in tiled CNN prediction). Every rule here is a function of the pixel's
fixed neighbourhood on the raster (or a global constant), never of the tile:

- ``"local_mean"`` (the default for elevation): ``(z - mean of z within a
  square window of window_m metres centred on the pixel) / scale_m``. The mean
  ignores NoData and cells outside the raster (it is the mean of the valid
  cells of that window). With window_m = 10 km and scale_m = 500 m (a rule
  that trained well in a first experiment: a ResNet-18 FCN learnt rule labels
  from it to 90 % PA on unseen DEMs) this is relative relief: a plain at
  4500 m on a plateau gives values near 0 exactly like a plain at 50 m, and
  a mountain range stands out by its relief, not by its absolute height;
  which is what the landform classes are defined by (relief and elevation
  *differences*, Cheng et al. 2011). It is computed with separable running
  sums (O(1) per pixel whatever the window) on the window read with a halo of
  ``window_m / 2`` metres, so every tile sees the same value at a pixel.
- ``"affine"``: ``(value - offset) / scale`` with global constants (for
  slope, hillshade, ... : e.g. slope / 45 degrees); tile-independent.

Denoising (optional, stored with the normalisation)
---------------------------------------------------
``normalisation["denoise"] = {"method": "gaussian", "sigma_m": S}`` low-passes the (filled)
elevation by a Gaussian of S metres before any factor is derived from it. Relief in a 1 km
window and slope, the bundled model's inputs, are max-min and gradient measures: 3 m of white
noise on a flat plain raises the 1 km relief from ~2 m to ~15 m, so the network sees a
different plain. A model trained with the filter sees the same filtered DEM at classification
(the rule travels in its file); models without the entry see the DEM as it is.

NoData
------
Before anything is computed, NoData cells (NaN after ``rasters.read_window``: voids, a coast,
cells past a geographic DEM's coverage) up to VOID_FILL_M from the nearest elevation are filled
by GDAL's FillNodata (inverse-distance interpolation from the edge of the gap), so the network
sees terrain that continues instead of a flat plate with a cliff around it. Cells still empty
get ``FILL_VALUE`` (0, the "equal to its surroundings" level) in every channel. Either way they
are returned in the ``valid`` mask and the predictor forces class 0 ("no data") there.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import LandformError

FILL_VALUE = 0.0
# NoData filled up to this far from the nearest elevation before the input is made. Measured by
# bench/robustness.py (six held-out DEMs at 90 m, the bundled default model), share of cells
# whose class changes when 5 % of the DEM is cut out as 0.5-2 km voids, without -> with the fill:
# within 1 km of a void 14.25 -> 2.36 %, beyond 1 km 1.64 -> 0.25 %; the clean maps' agreement
# with the rules PA 90.35 -> 90.55 %, MIoU 75.42 -> 75.90 % (their own NoData and edges). Reaching
# 16, 40 or 100 cells (1.4, 3.6, 9 km) gave the same within 0.02 points, except the half-DEM cut at
# 1-3 km (2.03, 1.78, 1.75 % against 2.46 % without). A 2638^2 window with NoData pays 0.06-0.7 s.
VOID_FILL_M = 2000.0
DEFAULT_LOCAL_WINDOW_M = 10_000.0
DENOISE = "denoise"  # normalisation entry: the elevation's low-pass before any factor (module docstring)
DENOISE_TRUNCATE = 3.0  # the Gaussian's half-width in sigmas
DEFAULT_RELIEF_SCALE_M = 500.0

# Global scales for terrain factors (units as core.terrain writes them).
_FACTOR_DEFAULTS = {
    "slope": {"method": "affine", "offset": 0.0, "scale": 45.0},  # degrees
    "aspect": {"method": "affine", "offset": 180.0, "scale": 180.0},  # degrees
    "hillshade": {"method": "affine", "offset": 127.5, "scale": 127.5},  # 0-255
    "rdls": {"method": "affine", "offset": 0.0, "scale": 500.0},  # metres
    "relief": {"method": "affine", "offset": 0.0, "scale": 500.0},  # metres
    "curvature": {"method": "affine", "offset": 0.0, "scale": 1.0},  # 1/(100 m)
    "profile_curvature": {"method": "affine", "offset": 0.0, "scale": 1.0},
    "plan_curvature": {"method": "affine", "offset": 0.0, "scale": 1.0},
}


def default_normalisation(factor: str) -> dict:
    """The normalisation rule a new model uses for ``factor`` (stored in its spec)."""
    if factor == "dem":
        return {"method": "local_mean", "window_m": DEFAULT_LOCAL_WINDOW_M, "scale_m": DEFAULT_RELIEF_SCALE_M}
    return dict(_FACTOR_DEFAULTS.get(factor, {"method": "affine", "offset": 0.0, "scale": 1.0}))


def denoise_rule(sigma_m: float) -> dict:
    """The ``normalisation[DENOISE]`` entry for a Gaussian of ``sigma_m`` metres."""
    return {"method": "gaussian", "sigma_m": float(sigma_m)}


def denoise_sigma_px(normalisation: Dict[str, dict], pixel_size_m: float) -> float:
    """The elevation's denoising sigma in cells (0: none)."""
    rule = normalisation.get(DENOISE)
    return float(rule["sigma_m"]) / float(pixel_size_m) if rule else 0.0


def denoise_radius_px(normalisation: Dict[str, dict], pixel_size_m: float) -> int:
    sigma = denoise_sigma_px(normalisation, pixel_size_m)
    return int(math.ceil(DENOISE_TRUNCATE * sigma)) if sigma > 0 else 0


def denoise(elev: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian low-pass of ``elev`` over its finite cells (normalised by the weight of finite
    cells under the kernel, so NoData does not pull values down); NaN stays NaN."""
    if sigma_px <= 0:
        return elev
    from scipy.ndimage import gaussian_filter

    ok = np.isfinite(elev)
    if ok.all():
        return gaussian_filter(elev, sigma_px, mode="nearest", truncate=DENOISE_TRUNCATE).astype(np.float32, copy=False)
    if not ok.any():
        return elev
    num = gaussian_filter(np.where(ok, elev, np.float32(0)), sigma_px, mode="nearest", truncate=DENOISE_TRUNCATE)
    den = gaussian_filter(ok.astype(np.float32), sigma_px, mode="nearest", truncate=DENOISE_TRUNCATE)
    out = np.full(elev.shape, np.nan, np.float32)
    np.divide(num, den, out=out, where=ok)
    return out


def validate_normalisation(factors: Sequence[str], normalisation: Dict[str, dict]) -> None:
    rule = normalisation.get(DENOISE)
    if rule is not None and not (isinstance(rule, dict) and rule.get("method") == "gaussian"
                                 and float(rule.get("sigma_m", 0)) > 0):
        raise LandformError(f"The model's denoising rule {rule!r} is not a Gaussian with a positive sigma_m.")
    for f in factors:
        rule = normalisation.get(f)
        if not isinstance(rule, dict) or "method" not in rule:
            raise LandformError(f"The model gives no normalisation rule for input factor '{f}'.")
        if rule["method"] == "local_mean":
            if not (float(rule.get("window_m", 0)) > 0 and float(rule.get("scale_m", 0)) > 0):
                raise LandformError(f"Normalisation of '{f}': local_mean needs positive window_m and scale_m.")
        elif rule["method"] == "affine":
            if float(rule.get("scale", 0)) == 0:
                raise LandformError(f"Normalisation of '{f}': affine needs a non-zero scale.")
        else:
            raise LandformError(f"Normalisation of '{f}': unknown method '{rule['method']}'.")


def local_radius_px(rule: dict, pixel_size_m: float) -> int:
    """Half-width in pixels of a local_mean window at this pixel size."""
    return max(1, int(round(float(rule["window_m"]) / 2.0 / float(pixel_size_m))))


def _terrain():
    try:
        from . import terrain
    except ImportError as exc:  # terrain factors arrive with core.terrain
        raise LandformError(f"This model needs terrain factors, but core.terrain is not available ({exc}).") from exc
    return terrain


def halo_pixels(factors: Sequence[str], normalisation: Dict[str, dict], pixel_size_m: float,
                terrain_params: Optional[dict] = None) -> int:
    """Margin (pixels) to read around a window so every input value is exact (tile-independent)."""
    terrain_factors = [f for f in factors if f != "dem"]
    factor_halo = 0
    if terrain_factors:
        factor_halo = int(_terrain().halo_pixels(terrain_factors, terrain_params or {}, float(pixel_size_m)))
    halo = factor_halo
    for f in factors:
        rule = normalisation[f]
        if rule["method"] == "local_mean":
            # a local mean of a terrain factor needs the factor itself exact over its window
            halo = max(halo, local_radius_px(rule, pixel_size_m) + (0 if f == "dem" else factor_halo))
    # the denoised elevation needs the filter's radius more; a filled NoData cell takes its value
    # from elevations up to fill_reach_px farther out
    return halo + denoise_radius_px(normalisation, pixel_size_m) + fill_reach_px(pixel_size_m)


def fill_reach_px(pixel_size_m: float) -> int:
    """How far (cells) ``fill_voids`` reaches from an elevation into NoData: VOID_FILL_M."""
    return max(1, int(math.ceil(VOID_FILL_M / float(pixel_size_m))))


def box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean of the finite values in the (2r+1)^2 box around each cell (NaN where none).

    Separable running sums (``scipy.ndimage.uniform_filter1d``, float64, zero
    outside the array) of the valid values and of the valid-cell count: O(1)
    per cell whatever the radius; cells outside the array count as missing, so
    the value at a cell depends only on the data within ``radius`` of it.
    """
    from scipy.ndimage import uniform_filter1d

    valid = np.isfinite(values)
    all_valid = bool(valid.all())
    z = values.astype(np.float32) if all_valid else np.where(valid, values, np.float32(0)).astype(np.float32)
    size = 2 * int(radius) + 1
    # scipy accumulates the running sums in double precision; float32 storage is enough for a mean
    for axis in (0, 1):
        z = uniform_filter1d(z, size, axis=axis, mode="constant", cval=0.0)
    if all_valid:  # the count is separable: (cells in the row window) x (cells in the column window)
        ny = uniform_filter1d(np.ones(values.shape[0], np.float64), size, mode="constant", cval=0.0)
        nx = uniform_filter1d(np.ones(values.shape[1], np.float64), size, mode="constant", cval=0.0)
        n = (ny[:, None] * nx[None, :]).astype(np.float32)
    else:
        n = valid.astype(np.float32)
        for axis in (0, 1):
            n = uniform_filter1d(n, size, axis=axis, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = z / n
    m[n < 0.5 / size**2] = np.nan
    return m


def normalise(values: np.ndarray, rule: dict, pixel_size_m: float) -> np.ndarray:
    """Apply one factor's rule to an array that includes the needed halo."""
    values = values.astype(np.float32, copy=False)
    if rule["method"] == "local_mean":
        mean = box_mean(values, local_radius_px(rule, pixel_size_m))
        out = (values - mean) * np.float32(1.0 / float(rule["scale_m"]))
    elif rule["method"] == "affine":
        out = (values - np.float32(rule.get("offset", 0.0))) * np.float32(1.0 / float(rule["scale"]))
    else:
        raise LandformError(f"Unknown normalisation method '{rule['method']}'.")
    return out.astype(np.float32, copy=False)


def make_input(
    elev: np.ndarray,
    halo: int,
    factors: Sequence[str],
    normalisation: Dict[str, dict],
    pixel_size_m: float,
    dx_rows: Optional[np.ndarray] = None,
    dy_rows: Optional[np.ndarray] = None,
    terrain_params: Optional[dict] = None,
    raster_box: Optional[Tuple[int, int, int, int]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Network input for the core of a window.

    ``elev``: float32 elevation of the window plus ``halo`` cells on each side,
    NaN for NoData / outside the raster (as ``rasters.read_window`` returns).
    ``raster_box``: where the raster lies in ``elev`` (``terrain.window_raster_box``),
    so NoData is filled past its straight edges as ``fill_voids`` says and 3x3 factors on the
    raster's own edge follow gdaldem's -compute_edges rule.
    Returns ``(channels, valid)``: float32 (C, h, w) for the window core and its
    bool validity mask (h, w): False on the DEM's NoData, whose cells hold the filled terrain
    (``fill_voids``) or, farther than its reach, ``FILL_VALUE`` in every channel.
    """
    h = int(halo)
    core = (slice(h, elev.shape[0] - h), slice(h, elev.shape[1] - h))
    valid = np.isfinite(elev[core])
    elev = denoise(fill_voids(elev, pixel_size_m, raster_box), denoise_sigma_px(normalisation, pixel_size_m))
    layers = {}
    terrain_factors = [f for f in factors if f != "dem"]
    if terrain_factors:
        t = _terrain()
        n = elev.shape[0]
        if dx_rows is None:
            dx_rows = np.full(n, float(pixel_size_m))
        if dy_rows is None:
            dy_rows = np.full(n, float(pixel_size_m))
        if raster_box is not None:
            # Clip to the array: where the raster continues past the array border, that border
            # lies in the halo (cropped away below), so treating it as an edge changes no kept cell.
            # (Also avoids an IndexError in terrain's edge fix for boxes wider than the array.)
            r0, r1, c0, c1 = (int(v) for v in raster_box)
            raster_box = (max(r0, 0), min(r1, elev.shape[0]), max(c0, 0), min(c1, elev.shape[1]))
        computed = t.compute_factors_block(
            elev, dx_rows, dy_rows, list(terrain_factors), terrain_params or {}, raster_box=raster_box
        )
        for f in terrain_factors:
            layers[f] = np.asarray(computed[f], dtype=np.float32)
    if "dem" in factors:
        layers["dem"] = elev
    chans = []
    for f in factors:
        arr = normalise(layers[f], normalisation[f], pixel_size_m)[core]
        arr = np.where(np.isfinite(arr), arr, np.float32(FILL_VALUE))  # filled voids keep their values
        chans.append(arr.astype(np.float32, copy=False))
    return np.stack(chans, axis=0), valid


def fill_voids(elev: np.ndarray, pixel_size_m: float,
               raster_box: Optional[Tuple[int, int, int, int]] = None) -> np.ndarray:
    """``elev`` with its NaN cells within ``fill_reach_px`` of an elevation filled; NaN stays
    farther away; ``elev`` itself when there is nothing to fill.

    Inside the raster (all of the array without ``raster_box``): GDAL's FillNodata, an
    inverse-distance interpolation from the gap's edge, no smoothing. Past the raster's own
    straight edges (``raster_box``: where the raster lies in the array): its edge values carried
    straight out, which does the same there (bench/robustness.py, the DEM cut in half, cells 1-3
    km from the cut that change: 1.93 % with FillNodata, 1.95 % carried out, 2.46 % unfilled) for
    a tenth of the time (FillNodata took 0.5 s per 2638^2 tile at a 30 m DEM's edge).
    """
    bad = ~np.isfinite(elev)
    if not bad.any() or bad.all():
        return elev
    rows, cols = elev.shape
    r0, r1, c0, c1 = (0, rows, 0, cols) if raster_box is None else raster_box
    r0, r1, c0, c1 = max(0, r0), min(rows, r1), max(0, c0), min(cols, c1)
    if r0 >= r1 or c0 >= c1:
        return elev
    inner = _fill_nodata(elev[r0:r1, c0:c1], pixel_size_m)
    if (r0, r1, c0, c1) == (0, rows, 0, cols):
        return inner
    reach = fill_reach_px(pixel_size_m)
    pr0, pr1, pc0, pc1 = max(0, r0 - reach), min(rows, r1 + reach), max(0, c0 - reach), min(cols, c1 + reach)
    out = np.full(elev.shape, np.nan, np.float32)
    out[pr0:pr1, pc0:pc1] = np.pad(inner, ((r0 - pr0, pr1 - r1), (c0 - pc0, pc1 - c1)), mode="edge")
    return out


def _fill_nodata(elev: np.ndarray, pixel_size_m: float) -> np.ndarray:
    """GDAL FillNodata of the NaN cells up to ``fill_reach_px`` away (``elev`` itself without NaN)."""
    bad = ~np.isfinite(elev)
    if not bad.any() or bad.all():
        return elev
    from osgeo import gdal

    ds = gdal.GetDriverByName("MEM").Create("", elev.shape[1], elev.shape[0], 1, gdal.GDT_Float32)
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(float("nan"))
    band.WriteArray(np.where(bad, np.float32(np.nan), elev).astype(np.float32, copy=False))
    # its work rasters in memory: by default GDAL writes them as GeoTIFFs into the current folder
    if gdal.FillNodata(band, None, fill_reach_px(pixel_size_m), 0, options=["TEMP_FILE_DRIVER=MEM"]) != 0:
        raise LandformError(f"Could not fill the DEM's NoData cells: {gdal.GetLastErrorMsg()}")
    return band.ReadAsArray()


def reflect_pad(a: np.ndarray, pads) -> np.ndarray:
    """Mirror the channels of a (C, h, w) input past a raster's straight edge (``pads`` as for
    ``np.pad``), as classification does for a projected DEM; works when the pad is wider than
    the array (repeated mirroring)."""
    for axis in (1, 2):
        before, after = pads[axis]
        if not (before or after):
            continue
        width = [(0, 0)] * a.ndim
        width[axis] = (before, after)
        mode = "reflect" if a.shape[axis] > 1 else "edge"
        a = np.pad(a, width, mode=mode)
    return a
