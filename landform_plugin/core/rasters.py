"""GDAL raster I/O shared by every algorithm: validated opening, cell sizes in
metres, windows with halos, and GeoTIFF writers that never leave a
half-written file looking complete.

Why here and not in each algorithm: the checks users hit first (wrong band,
no CRS, non-numeric data, all NoData) and the output conventions (tiled,
compressed, exact georeferencing, atomic rename) must be the same everywhere.
"""
import contextlib
import math
import os
import uuid
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, osr

from .errors import LandformError
from .outputs import check_output_path, replace_with_sidecar, write_failure  # noqa: F401 (check_output_path re-exported)

# Tiled GeoTIFF with ZSTD level 1: compression measured as ~85 % of
# terrain-factor CPU time; ZSTD-1 is ~3x faster than DEFLATE for files within
# 1.4 % of its size.
GTIFF_OPTIONS = [
    "TILED=YES",
    "BLOCKXSIZE=512",
    "BLOCKYSIZE=512",
    "COMPRESS=ZSTD",
    "ZSTD_LEVEL=1",
    "BIGTIFF=IF_SAFER",
    "NUM_THREADS=2",
]

_REAL_TYPES = {
    gdal.GDT_Byte,
    gdal.GDT_UInt16,
    gdal.GDT_Int16,
    gdal.GDT_UInt32,
    gdal.GDT_Int32,
    gdal.GDT_Float32,
    gdal.GDT_Float64,
}
for _name in ("GDT_Int8", "GDT_UInt64", "GDT_Int64"):
    if hasattr(gdal, _name):
        _REAL_TYPES.add(getattr(gdal, _name))


@dataclass(frozen=True)
class RasterInfo:
    """What the algorithms need to know about one band of a raster."""

    path: str
    band: int
    width: int
    height: int
    band_count: int
    geotransform: Tuple[float, float, float, float, float, float]
    crs_wkt: str
    nodata: Optional[float]
    data_type: str

    @property
    def has_crs(self) -> bool:
        return bool(self.crs_wkt)

    @property
    def is_geographic(self) -> bool:
        return bool(self.crs_wkt) and bool(_srs(self.crs_wkt).IsGeographic())

    @property
    def pixel_width(self) -> float:
        return abs(self.geotransform[1])

    @property
    def pixel_height(self) -> float:
        return abs(self.geotransform[5])


def _srs(wkt: str) -> osr.SpatialReference:
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    if hasattr(srs, "SetAxisMappingStrategy"):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def open_raster(path: str, band: int = 1) -> Tuple[gdal.Dataset, RasterInfo]:
    """Open ``path`` read-only and check ``band``; raise LandformError with a clear message."""
    if not path:
        raise LandformError("No raster was given.")
    ds = open_dataset(path, gdal.OF_RASTER)
    if ds is None and "/vsi" not in str(path) and not os.path.exists(str(path)):
        raise LandformError(f"The raster '{path}' does not exist; check the path.")
    if ds is None:
        raise LandformError(f"Cannot open '{path}' as a raster: {gdal.GetLastErrorMsg() or 'not a raster GDAL can read'}. {READ_HINT}")
    if ds.RasterCount == 0:
        raise LandformError(f"'{path}' has no raster bands.")
    if not 1 <= int(band) <= ds.RasterCount:
        raise LandformError(
            f"'{path}' has {ds.RasterCount} band(s); band {band} does not exist. "
            "Choose the band that holds elevation."
        )
    b = ds.GetRasterBand(int(band))
    if b.DataType not in _REAL_TYPES:
        raise LandformError(
            f"Band {band} of '{path}' is of type {gdal.GetDataTypeName(b.DataType)}; "
            "an elevation band must hold real numbers (integer or floating point)."
        )
    gt = tuple(ds.GetGeoTransform(can_return_null=True) or (0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    if gt[2] != 0 or gt[4] != 0:
        raise LandformError(
            f"'{path}' has a rotated geotransform; warp it to a north-up grid first (Raster > Projections > Warp)."
        )
    info = RasterInfo(
        path=str(path),
        band=int(band),
        width=ds.RasterXSize,
        height=ds.RasterYSize,
        band_count=ds.RasterCount,
        geotransform=gt,
        crs_wkt=ds.GetProjection() or "",
        nodata=b.GetNoDataValue(),
        data_type=gdal.GetDataTypeName(b.DataType),
    )
    return ds, info


def open_dataset(path: str, kinds: int = gdal.OF_RASTER | gdal.OF_VECTOR):
    """``gdal.OpenEx`` read-only, quiet, and refusing damaged files: one that is empty,
    one whose directory GDAL could only partly read, a GeoTIFF whose pixel blocks lie
    past its end (cut short). Returns None when GDAL does not recognise the file."""
    path = str(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise LandformError(f"Cannot open '{path}': the file is empty (0 bytes). {READ_HINT}")
    gdal.ErrorReset()
    with _GdalFailures(gdal.CE_Warning) as noted:
        try:
            ds = gdal.OpenEx(path, kinds | gdal.OF_READONLY)
        except RuntimeError:  # gdal.UseExceptions() is on (richdem and some plugins turn it on)
            ds = None
    damage = [m for m in noted.messages if any(w in m for w in _DAMAGE_WORDS)]
    if damage:
        raise LandformError(f"'{path}' is damaged ({damage[0].strip()}). {READ_HINT}")
    if ds is not None and ds.GetDriver().ShortName == "GTiff" and ds.RasterCount:
        _check_tiff_blocks(ds, path)
    return ds


def _check_tiff_blocks(ds, path: str, max_blocks: int = 200_000) -> None:
    """A GeoTIFF cut short still opens; its block table then points past the end of the file."""
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if size is None:
        return
    b = ds.GetRasterBand(ds.RasterCount)  # band-interleaved files keep the last band last
    bx, by = b.GetBlockSize()
    nx, ny = -(-ds.RasterXSize // bx), -(-ds.RasterYSize // by)
    step = max(1, (nx * ny) // max_blocks)
    for k in list(range(0, nx * ny, step)) + [nx * ny - 1]:
        x, y = k % nx, k // nx
        offset = b.GetMetadataItem(f"BLOCK_OFFSET_{x}_{y}", "TIFF")
        length = b.GetMetadataItem(f"BLOCK_SIZE_{x}_{y}", "TIFF")
        if offset and length and int(offset) + int(length) > size:
            raise LandformError(
                f"'{path}' is cut short: it is {size} bytes, but its pixel data runs to byte {int(offset) + int(length)}. "
                f"{READ_HINT}"
            )


def require_crs(info: RasterInfo) -> None:
    """Terrain measures need metres: refuse rasters whose CRS is unknown."""
    if not info.has_crs:
        raise LandformError(
            f"'{info.path}' has no coordinate reference system, so its cell size in metres is unknown. "
            "Assign its CRS first (Raster > Projections > Assign Projection)."
        )


# GDAL's words, on opening, for a file whose directory or tags were cut off.
_DAMAGE_WORDS = ("IO error", "Read error", "Cannot read TIFF directory", "truncated", "Incorrect count")
READ_HINT = (
    "Check that the file is complete and a raster GDAL reads (gdalinfo -checksum); "
    "if it was cut short, export or download it again."
)


def read_band(band: gdal.Band, x0: int = 0, y0: int = 0, width: Optional[int] = None, height: Optional[int] = None,
              path: Optional[str] = None, **kw) -> np.ndarray:
    """``band.ReadAsArray`` that never returns None: a truncated or corrupt file raises
    LandformError naming the file and what to do, instead of an AttributeError later."""
    width = band.XSize - x0 if width is None else width
    height = band.YSize - y0 if height is None else height
    gdal.ErrorReset()
    data, reason = None, ""
    with _quiet_gdal():
        try:
            data = band.ReadAsArray(x0, y0, width, height, **kw)
        except RuntimeError as exc:  # gdal.UseExceptions() may be on
            reason = str(exc)
    if data is None:
        where = path or _band_source(band)
        reason = reason or gdal.GetLastErrorMsg() or "GDAL returned no data"
        raise LandformError(f"Could not read '{where}' (cells {x0},{y0} to {x0 + width},{y0 + height}): {reason}. {READ_HINT}")
    return data


def _band_source(band: gdal.Band) -> str:
    ds = band.GetDataset()
    return (ds.GetDescription() if ds is not None else "") or "an in-memory raster"


class _quiet_gdal:
    """Silence GDAL's stderr printing while keeping GetLastErrorMsg() usable."""

    def __enter__(self):
        gdal.PushErrorHandler("CPLQuietErrorHandler")

    def __exit__(self, *exc):
        gdal.PopErrorHandler()
        return False


# ----------------------------------------------------------------------------- cell sizes


def linear_unit_metres(info: RasterInfo) -> float:
    """Metres per unit of a projected CRS (1.0 for metres, 0.3048 for feet)."""
    if not info.has_crs or info.is_geographic:
        return 1.0
    return float(_srs(info.crs_wkt).GetLinearUnits() or 1.0)


def row_latitudes(info: RasterInfo, row0: int, nrows: int) -> np.ndarray:
    """Latitude (radians) of the centre of rows row0..row0+nrows-1 of a geographic raster."""
    srs = _srs(info.crs_wkt)
    to_rad = float(srs.GetAngularUnits() or math.pi / 180.0)
    gt = info.geotransform
    rows = np.arange(row0, row0 + nrows, dtype=np.float64) + 0.5
    return (gt[3] + rows * gt[5]) * to_rad


def cell_sizes_m(info: RasterInfo, row0: int = 0, nrows: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Cell width and height in metres for each row (arrays of length nrows).

    Projected CRSs: the pixel size times the linear unit, the same for every row.
    Geographic CRSs: from the CRS's ellipsoid at each row's latitude
    (meridional radius M for the height, prime-vertical radius N cos(lat) for the
    width), so slope on an EPSG:4326 DEM matches slope on its UTM reprojection.
    """
    if nrows is None:
        nrows = info.height - row0
    require_crs(info)
    if not info.is_geographic:
        unit = linear_unit_metres(info)
        return (
            np.full(nrows, info.pixel_width * unit, dtype=np.float64),
            np.full(nrows, info.pixel_height * unit, dtype=np.float64),
        )
    srs = _srs(info.crs_wkt)
    a = srs.GetSemiMajor()
    inv_f = srs.GetInvFlattening()
    e2 = 0.0 if not inv_f else (2.0 - 1.0 / inv_f) / inv_f
    to_rad = float(srs.GetAngularUnits() or math.pi / 180.0)
    lat = row_latitudes(info, row0, nrows)
    s2 = np.sin(lat) ** 2
    m = a * (1 - e2) / (1 - e2 * s2) ** 1.5
    n = a / np.sqrt(1 - e2 * s2)
    dx = n * np.cos(lat) * info.pixel_width * to_rad
    dy = m * info.pixel_height * to_rad
    return dx, dy


def mean_cell_size_m(info: RasterInfo) -> float:
    """One representative cell size in metres (geometric mean at the central row)."""
    dx, dy = cell_sizes_m(info, info.height // 2, 1)
    return float(math.sqrt(dx[0] * dy[0]))


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """A block of the raster (x0, y0, width, height) plus the halo read around it."""

    x0: int
    y0: int
    width: int
    height: int
    halo: int = 0


def block_windows(width: int, height: int, block_width: int, block_height: int, halo: int = 0) -> List[Window]:
    """Row-major tiling of the raster into blocks; every pixel in exactly one block."""
    if block_width <= 0 or block_height <= 0:
        raise ValueError("block sizes must be positive")
    out = []
    for y0 in range(0, height, block_height):
        for x0 in range(0, width, block_width):
            out.append(Window(x0, y0, min(block_width, width - x0), min(block_height, height - y0), halo))
    return out


def read_window(band: gdal.Band, win: Window, nodata: Optional[float]) -> np.ndarray:
    """Read ``win`` with its halo as float32; NoData and cells outside the raster become NaN."""
    h = win.halo
    xs, ys = band.XSize, band.YSize
    rx0, ry0 = max(0, win.x0 - h), max(0, win.y0 - h)
    rx1, ry1 = min(xs, win.x0 + win.width + h), min(ys, win.y0 + win.height + h)
    data = read_band(band, rx0, ry0, rx1 - rx0, ry1 - ry0).astype(np.float32, copy=False)
    if nodata is not None:
        if math.isnan(nodata):
            pass
        else:
            data = np.where(data == np.float32(nodata), np.float32(np.nan), data)
    out = np.full((win.height + 2 * h, win.width + 2 * h), np.nan, dtype=np.float32)
    oy, ox = ry0 - (win.y0 - h), rx0 - (win.x0 - h)
    out[oy : oy + data.shape[0], ox : ox + data.shape[1]] = data
    return out


@contextlib.contextmanager
def gdal_cache_at_most(limit: int):
    """GDAL's block cache capped at ``limit`` bytes for a while (then as before).

    A read or a translate that streams every block of a raster once would fill GDAL's
    default cache (5 % of the RAM) anyway: 1.2 GB of peak memory on a 24 GB machine, for
    nothing, and kept after the cache lets go of it (the blocks come from the heap).
    """
    before = gdal.GetCacheMax()
    gdal.SetCacheMax(min(before, limit))
    try:
        yield
    finally:
        gdal.SetCacheMax(before)


SCAN_CACHE_BYTES = 32 << 20  # GDAL's cache while a whole raster is scanned once (valid_fraction)


def valid_fraction(ds: gdal.Dataset, info: RasterInfo, max_pixels: int = 1_000_000) -> float:
    """Share of valid (not NoData, finite) cells, estimated on a decimated overview read.

    The decimated read decodes every block of a tiled raster once: with GDAL's cache capped
    meanwhile, a 16384^2 DEM costs 0.03 GB of memory instead of 0.7 GB kept for the whole run.
    """
    b = ds.GetRasterBand(info.band)
    step = max(1, int(math.ceil(math.sqrt(info.width * info.height / max_pixels))))
    bw, bh = max(1, info.width // step), max(1, info.height // step)
    with gdal_cache_at_most(SCAN_CACHE_BYTES):
        arr = read_band(b, 0, 0, info.width, info.height, path=info.path, buf_xsize=bw, buf_ysize=bh,
                        resample_alg=gdal.GRIORA_NearestNeighbour).astype(np.float64)
    valid = np.isfinite(arr)
    if info.nodata is not None and not math.isnan(info.nodata):
        valid &= arr != info.nodata
    return float(valid.mean()) if valid.size else 0.0


def require_some_data(ds: gdal.Dataset, info: RasterInfo) -> None:
    if valid_fraction(ds, info) == 0.0:
        raise LandformError(
            f"Band {info.band} of '{info.path}' holds only NoData (NoData value {info.nodata}); nothing to process."
        )


# ----------------------------------------------------------------------------- writing


class _GdalFailures:
    """Collect GDAL's CE_Failure messages (a full disk shows up only here: FlushCache
    and closing return nothing in GDAL 3.6) while keeping stderr quiet; with
    ``min_class`` CE_Warning also the warnings (a file cut short warns on opening)."""

    def __init__(self, min_class: int = gdal.CE_Failure):
        self.messages: List[str] = []
        self.min_class = min_class

    def _handler(self, err_class, _err_no, msg):
        if err_class >= self.min_class:
            self.messages.append(str(msg))

    def __enter__(self) -> "_GdalFailures":
        # With gdal.UseExceptions() on (richdem turns it on), closing a dataset that cannot
        # be written raises inside its destructor, where nothing can catch it: turn it off here.
        self.exceptions = bool(gdal.GetUseExceptions())
        if self.exceptions:
            gdal.DontUseExceptions()
        gdal.PushErrorHandler(self._handler)
        return self

    def __exit__(self, exc_type, exc, tb):
        gdal.PopErrorHandler()
        if self.exceptions:
            gdal.UseExceptions()
        if isinstance(exc, RuntimeError) and not self.messages:
            self.messages.append(str(exc))
        return isinstance(exc, RuntimeError)


class GeoTiffWriter:
    """Write a GeoTIFF under a temporary name and rename it into place on success.

    On an exception (including ``Cancelled``) the temporary file is deleted, so a
    cancelled or failed run never leaves an output that looks complete. Failed
    writes (a full disk) raise LandformError. With ``outputs`` (an
    ``outputs.OutputSet``) the set names the temporary file and commits it
    together with the run's other outputs.
    """

    def __init__(
        self,
        path: str,
        like: RasterInfo,
        bands: int = 1,
        data_type: int = gdal.GDT_Float32,
        nodata: Optional[float] = None,
        band_names: Optional[Sequence[str]] = None,
        color_table: Optional[Sequence[Tuple[int, Tuple[int, int, int], str]]] = None,
        options: Optional[List[str]] = None,
        width: Optional[int] = None,
        height: Optional[int] = None,
        geotransform: Optional[Sequence[float]] = None,
        outputs=None,
    ):
        self.path = str(path)
        if outputs is not None:  # an outputs.OutputSet: it renames (or deletes) this file with the others
            self.tmp_path = outputs.file(self.path, writer=self)
        else:
            check_output_path(self.path)
            folder = os.path.dirname(os.path.abspath(self.path))
            self.tmp_path = os.path.join(folder, f".{os.path.basename(self.path)}.{uuid.uuid4().hex[:8]}.partial.tif")
        opts = list(options or GTIFF_OPTIONS)
        if bands > 1:
            opts.append("INTERLEAVE=BAND")
        w = width if width is not None else like.width
        h = height if height is not None else like.height
        with _GdalFailures() as failures:
            ds = gdal.GetDriverByName("GTiff").Create(self.tmp_path, w, h, bands, data_type, opts)
        if ds is None:
            raise write_failure(self.path, "; ".join(failures.messages) or gdal.GetLastErrorMsg() or "GDAL could not create it")
        ds.SetGeoTransform(list(geotransform if geotransform is not None else like.geotransform))
        if like.crs_wkt:
            ds.SetProjection(like.crs_wkt)
        for i in range(bands):
            b = ds.GetRasterBand(i + 1)
            if nodata is not None:
                b.SetNoDataValue(float(nodata))
            if band_names and i < len(band_names):
                b.SetDescription(str(band_names[i]))
        if color_table is not None:
            _set_color_table(ds.GetRasterBand(1), color_table)
        self.ds = ds

    def write(self, array: np.ndarray, x0: int, y0: int, band: int = 1) -> None:
        """Write a 2-D array at (x0, y0) into ``band``, or a 3-D (bands, h, w) array into all bands."""
        planes = [(i + 1, array[i]) for i in range(array.shape[0])] if array.ndim == 3 else [(band, array)]
        with _GdalFailures() as failures:
            codes = [self.ds.GetRasterBand(b).WriteArray(a, x0, y0) for b, a in planes]
        if failures.messages or any(codes):
            raise write_failure(self.path, "; ".join(failures.messages) or "GDAL could not write a block")

    def band(self, i: int) -> gdal.Band:
        return self.ds.GetRasterBand(i)

    def __enter__(self) -> "GeoTiffWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False

    def flush(self) -> None:
        """Let GDAL write (compress) what it holds; raise LandformError when it could not."""
        with _GdalFailures() as failures:
            self.ds.FlushCache()
        if failures.messages:
            raise write_failure(self.path, "; ".join(dict.fromkeys(failures.messages)))

    def close(self) -> None:
        """Flush and close the temporary file; raise LandformError when GDAL could not write it."""
        if self.ds is None:
            return
        with _GdalFailures() as failures:
            self.ds.FlushCache()
            self.ds = None
        if failures.messages:
            self.discard()
            raise write_failure(self.path, "; ".join(dict.fromkeys(failures.messages)))

    def commit(self) -> None:
        if self.ds is None and not os.path.exists(self.tmp_path):
            return
        self.close()
        replace_with_sidecar(self.tmp_path, self.path)

    def discard(self) -> None:
        with _GdalFailures():  # closing a file that cannot be written fails again: it is deleted anyway
            self.ds = None
        for p in (self.tmp_path, self.tmp_path + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)


def _set_color_table(band: gdal.Band, color_table) -> None:
    ct = gdal.ColorTable()
    names = [""] * (max(code for code, _, _ in color_table) + 1)
    for code, rgb, name in color_table:
        ct.SetColorEntry(int(code), (int(rgb[0]), int(rgb[1]), int(rgb[2]), 255))
        names[int(code)] = name
    band.SetRasterColorTable(ct)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    band.SetCategoryNames(names)


def read_array(path: str, band: int = 1) -> np.ndarray:
    """Read a whole band (for tests and small rasters)."""
    ds, info = open_raster(path, band)
    return read_band(ds.GetRasterBand(band), path=info.path)
