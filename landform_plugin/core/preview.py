"""PNG previews of a landform classification a person can look at.

One figure: the DEM's hillshade with the classes drawn semi-transparently over
it and a legend of class names and colours; beside it, when a confidence raster
is given, the confidence of the top class (0-1) over the same hillshade.
matplotlib with the Agg backend (no display needed); large rasters are read
decimated to at most ``max_side`` pixels per side.
"""
import math
from typing import List, Optional, Sequence

import numpy as np
from osgeo import gdal

from . import labels, rasters
from .errors import LandformError


def _read_decimated(path: str, band: int, max_side: int, resample=gdal.GRIORA_NearestNeighbour):
    ds, info = rasters.open_raster(path, band)
    step = max(1, int(math.ceil(max(info.width, info.height) / max_side)))
    bw, bh = max(1, info.width // step), max(1, info.height // step)
    b = ds.GetRasterBand(band)
    arr = rasters.read_band(b, path=path, buf_xsize=bw, buf_ysize=bh, resample_alg=resample).astype(np.float32)
    if info.nodata is not None and not math.isnan(info.nodata):
        arr[arr == np.float32(info.nodata)] = np.nan
    return arr, info, step


def hillshade(dem: np.ndarray, cell_x: float, cell_y: float, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Lambertian hillshade in 0-1 (NaN stays NaN); for display only."""
    z = np.where(np.isnan(dem), np.nanmean(dem), dem).astype(np.float64)
    gy, gx = np.gradient(z, cell_y, cell_x)  # per metre; rows grow southwards
    dz_east, dz_north = gx, -gy
    az, alt = math.radians(azimuth), math.radians(altitude)
    sun = (math.sin(az) * math.cos(alt), math.cos(az) * math.cos(alt), math.sin(alt))
    hs = (-dz_east * sun[0] - dz_north * sun[1] + sun[2]) / np.sqrt(1.0 + dz_east ** 2 + dz_north ** 2)
    hs = np.clip(hs, 0, 1)
    hs[np.isnan(dem)] = np.nan
    return hs


def class_colors(classes: Sequence[labels.LandformClass]) -> np.ndarray:
    lut = np.zeros((256, 4), dtype=np.float32)
    for c in classes:
        lut[c.code, :3] = np.array(c.color) / 255.0
        lut[c.code, 3] = 1.0
    return lut


def render_preview(
    dem_path: str,
    class_path: str,
    out_png: str,
    confidence_path: Optional[str] = None,
    classes: Optional[List[labels.LandformClass]] = None,
    compare_path: Optional[str] = None,
    compare_title: str = "Rule-based classes (core.rules)",
    title: str = "",
    class_title: str = "Landform classes over hillshade",
    alpha: float = 0.55,
    max_side: int = 1200,
) -> str:
    """Write the preview PNG to ``out_png`` and return its path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    classes = classes or list(labels.DEFAULT_CLASSES)
    cls, cinfo, _ = _read_decimated(class_path, 1, max_side)
    hs = _display_hillshade(dem_path, cls.shape, cinfo, max_side)
    codes = np.nan_to_num(cls, nan=0).astype(np.int64).clip(0, 255)
    panels = 1 + bool(confidence_path) + bool(compare_path)
    aspect = cls.shape[0] / cls.shape[1]
    fig, axes = plt.subplots(1, panels, figsize=(7.0 * panels, 7.0 * aspect + 1.4), squeeze=False, dpi=110)
    _class_panel(axes[0, 0], hs, codes, classes, alpha, class_title)
    if confidence_path:
        conf = read_top_confidence(confidence_path, max_side)[: cls.shape[0], : cls.shape[1]]
        _confidence_panel(fig, axes[0, 1], hs, codes, conf)
    if compare_path:
        other, _, _ = _read_decimated(compare_path, 1, max_side)
        ocodes = np.nan_to_num(other[: cls.shape[0], : cls.shape[1]], nan=0).astype(np.int64).clip(0, 255)
        _compare_panel(axes[0, panels - 1], hs, codes, ocodes, classes, alpha, compare_title)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _display_hillshade(dem_path: str, shape, cinfo: rasters.RasterInfo, max_side: int) -> np.ndarray:
    """The DEM's hillshade on the (decimated) class raster's cells."""
    _, dinfo = rasters.open_raster(dem_path)
    if (dinfo.width, dinfo.height) != (cinfo.width, cinfo.height):
        # A class raster on another grid (e.g. resampled): warp the DEM onto it for display.
        mem = gdal.Warp("", dem_path, format="MEM", width=shape[1], height=shape[0],
                        outputBounds=_bounds(cinfo), dstSRS=cinfo.crs_wkt or None, resampleAlg="bilinear")
        if mem is None:
            raise LandformError(f"Cannot resample '{dem_path}' onto the class raster for the preview.")
        dem = rasters.read_band(mem.GetRasterBand(1), path=dem_path).astype(np.float32)
        nd = mem.GetRasterBand(1).GetNoDataValue()
        if nd is not None:
            dem[dem == np.float32(nd)] = np.nan
    else:
        dem, _, _ = _read_decimated(dem_path, 1, max_side, gdal.GRIORA_Average)
        dem = dem[: shape[0], : shape[1]]
    # Display cell size in metres (central row), scaled by the decimation.
    dx, dy = rasters.cell_sizes_m(cinfo, cinfo.height // 2, 1)
    sx, sy = cinfo.width / shape[1], cinfo.height / shape[0]
    return hillshade(dem, float(dx[0]) * sx, float(dy[0]) * sy)


def _overlay(codes: np.ndarray, classes, alpha: float) -> np.ndarray:
    ov = class_colors(classes)[codes]
    ov[..., 3] = np.where(codes > 0, alpha, 0.0)
    return ov


def _class_panel(ax, hs, codes, classes, alpha: float, title: str) -> None:
    from matplotlib.patches import Patch

    ax.imshow(hs, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.imshow(_overlay(codes, classes, alpha), interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    present = set(np.unique(codes).tolist())
    handles = []
    for c in classes:
        if c.code == labels.NODATA_CLASS:
            continue
        share = 100.0 * np.mean(codes[codes > 0] == c.code) if (codes > 0).any() else 0.0
        handles.append(Patch(facecolor=np.array(c.color) / 255.0, edgecolor="black",
                             label=f"{c.code} {c.name} ({share:.1f} %)" if c.code in present else f"{c.code} {c.name} (0 %)"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=8, frameon=False)


def _confidence_panel(fig, ax, hs, codes, conf) -> None:
    ax.imshow(hs, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    im = ax.imshow(np.ma.masked_invalid(np.where(codes > 0, conf, np.nan)), cmap="viridis", vmin=0, vmax=1,
                   alpha=0.8, interpolation="nearest")
    ax.set_title("Confidence of the top class")
    ax.set_axis_off()
    cb = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.02)
    cb.set_label("probability of the predicted class (0-1)")


def _compare_panel(ax, hs, codes, ocodes, classes, alpha: float, title: str) -> None:
    ax.imshow(hs, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.imshow(_overlay(ocodes, classes, alpha), interpolation="nearest")
    both = (codes > 0) & (ocodes > 0)
    agree = 100.0 * np.mean(codes[both] == ocodes[both]) if both.any() else float("nan")
    ax.set_title(f"{title}\nsame class as the left map: {agree:.1f} % of cells", fontsize=10)
    ax.set_axis_off()


def read_top_confidence(path: str, max_side: int) -> np.ndarray:
    """The top-class confidence band of a confidence raster (by its description,
    as core.predict names it), else the maximum over all bands."""
    ds = gdal.Open(path)
    if ds is None:
        raise LandformError(f"Cannot open the confidence raster '{path}'.")
    names = [ds.GetRasterBand(b).GetDescription() for b in range(1, ds.RasterCount + 1)]
    ds = None
    for b, name in enumerate(names, start=1):
        if name.lower().startswith("top-class"):
            return _read_decimated(path, b, max_side)[0]
    stack = [_read_decimated(path, b, max_side)[0] for b in range(1, len(names) + 1)]
    return np.nanmax(np.stack(stack), axis=0) if len(stack) > 1 else stack[0]


def _bounds(info: rasters.RasterInfo):
    gt = info.geotransform
    x0, y0 = gt[0], gt[3]
    x1, y1 = x0 + gt[1] * info.width, y0 + gt[5] * info.height
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
