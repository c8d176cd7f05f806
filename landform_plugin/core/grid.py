"""The processing lattice: where the network's cells lie on the Earth.

Why a lattice fixed on the Earth
--------------------------------
A landform class must not change because the DEM file was cut differently or
arrives as one tile of a national mosaic. So the cells the network sees are
not derived from the file's extent but from a lattice that is the same for
every file:

- **Geographic DEMs** (EPSG:4326, EPSG:4269, ...) are resampled into UTM
  zones of their own datum (the northern-hemisphere definition everywhere, so
  no seam at the equator), cells aligned to multiples of the pixel size in
  zone coordinates. A DEM that spans several zones is classified once per
  zone and the zones are blended onto the output by longitude: a zone's
  weight is 1 inside it, ramps linearly to 0 over ``BLEND_DEG`` on either
  side of its edge, and the weights of neighbouring zones sum to 1. Each zone
  is processed ``2 * BLEND_DEG`` beyond its edge, so the cells a zone
  contributes to are never near the artificial edge of its domain. The
  largest distance from a zone's central meridian is 3 + 2 * BLEND_DEG = 4
  degrees, where the UTM scale factor is at most 0.9996 * (1 + (4 pi/180)^2
  / 2) = 1.0020: scale error within 0.2 % everywhere (within 0.04 % at the
  central meridian). UTM is defined to 84 N / 80 S; beyond, the DEM is
  refused with a clear message.
- **Projected DEMs** keep their CRS. When their cells already have the
  processing size they are used as they are (their own grid is the lattice:
  any crop of the file keeps its phase); otherwise cells are aligned to
  multiples of the pixel size in CRS units.

Cells of a lattice are addressed by *global* integer indices (column ``c``
covers x in [x0 + c px, x0 + (c + 1) px), row ``r`` covers y in
[y0 - (r + 1) px, y0 - r px]), so tiles can be anchored to the lattice too
(``tiling``) and a cell's prediction depends neither on the file's extent nor
on how the work is split into blocks.
"""
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal, osr

from .errors import LandformError
from .rasters import RasterInfo, Window, _quiet_gdal, linear_unit_metres, mean_cell_size_m, read_band, read_window

BLEND_DEG = 0.5  # half-width of the blend between two UTM zones, degrees of longitude
UTM_MAX_LAT = 84.0
UTM_MIN_LAT = -80.0
SAME_GRID_TOLERANCE = 0.01  # relative cell-size difference under which a projected DEM's grid is used as is

Box = Tuple[int, int, int, int]  # (c0, r0, c1, r1): global lattice columns/rows, end exclusive


@dataclass(frozen=True)
class Lattice:
    """A square-celled grid in one CRS, addressed by global integer indices."""

    crs_wkt: str
    px: float  # cell size in CRS units
    x0: float = 0.0  # x of the left edge of global column 0
    y0: float = 0.0  # y of the top edge of global row 0

    def geotransform(self, c0: int, r0: int) -> Tuple[float, float, float, float, float, float]:
        return (self.x0 + c0 * self.px, self.px, 0.0, self.y0 - r0 * self.px, 0.0, -self.px)

    def bounds(self, box: Box) -> Tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a box of cells."""
        c0, r0, c1, r1 = box
        return (self.x0 + c0 * self.px, self.y0 - r1 * self.px, self.x0 + c1 * self.px, self.y0 - r0 * self.px)

    def cover(self, xmin: float, ymin: float, xmax: float, ymax: float) -> Box:
        """The smallest box of cells that covers the rectangle (outward rounding)."""
        eps = 1e-6
        c0 = math.floor((xmin - self.x0) / self.px + eps)
        c1 = math.ceil((xmax - self.x0) / self.px - eps)
        r0 = math.floor((self.y0 - ymax) / self.px + eps)
        r1 = math.ceil((self.y0 - ymin) / self.px - eps)
        return (c0, r0, max(c1, c0 + 1), max(r1, r0 + 1))


@dataclass(frozen=True)
class Zone:
    """One lattice the DEM is classified on, and the cells of it that the DEM covers."""

    name: str
    lattice: Lattice
    domain: Box  # the DEM's footprint on this lattice (the "raster" the tiles see)
    lon_range: Optional[Tuple[float, float]] = None  # UTM zone edges (degrees) for the blend; None = weight 1
    same_grid: bool = False  # the lattice is the DEM's own grid (no resampling)

    @property
    def width(self) -> int:
        return self.domain[2] - self.domain[0]

    @property
    def height(self) -> int:
        return self.domain[3] - self.domain[1]


def _srs(wkt: str) -> osr.SpatialReference:
    s = osr.SpatialReference()
    s.ImportFromWkt(wkt)
    s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return s


def dem_bounds(info: RasterInfo) -> Tuple[float, float, float, float]:
    gt = info.geotransform
    xs = (gt[0], gt[0] + gt[1] * info.width)
    ys = (gt[3], gt[3] + gt[5] * info.height)
    return (min(xs), min(ys), max(xs), max(ys))


def utm_zone_wkt(geog_wkt: str, zone: int) -> str:
    """UTM zone ``zone`` (northern-hemisphere definition) on the datum of a geographic CRS."""
    geo = _srs(geog_wkt).CloneGeogCS()
    dst = osr.SpatialReference()
    dst.CopyGeogCSFrom(geo)
    dst.SetUTM(int(zone), True)
    dst.SetProjCS(f"UTM zone {zone} (landform processing lattice)")
    return dst.ExportToWkt()


def zone_edges(zone: int) -> Tuple[float, float]:
    west = -180.0 + 6.0 * (zone - 1)
    return west, west + 6.0


def zone_weights(lon: np.ndarray, lon_range: Optional[Tuple[float, float]]) -> np.ndarray:
    """Blend weight of a zone at longitudes ``lon`` (degrees): 1 inside, linear ramps over +-BLEND_DEG."""
    if lon_range is None:
        return np.ones_like(lon, dtype=np.float64)
    west, east = lon_range
    up = np.clip((lon - (west - BLEND_DEG)) / (2 * BLEND_DEG), 0.0, 1.0)
    down = np.clip(((east + BLEND_DEG) - lon) / (2 * BLEND_DEG), 0.0, 1.0)
    return np.minimum(up, down)


def _geographic_footprint(info: RasterInfo) -> Tuple[float, float, float, float]:
    """(lon_min, lat_min, lon_max, lat_max) of a geographic DEM, in degrees."""
    xmin, ymin, xmax, ymax = dem_bounds(info)
    unit = _srs(info.crs_wkt).GetAngularUnits() or math.pi / 180.0
    k = unit * 180.0 / math.pi
    return xmin * k, ymin * k, xmax * k, ymax * k


def _projected_box(geog_wkt: str, dst_wkt: str, lon0, lat0, lon1, lat1, unit_deg: float) -> Tuple[float, ...]:
    """Bounds in ``dst`` of a lon/lat rectangle, with densified edges (TM maps meridians to curves)."""
    ct = osr.CoordinateTransformation(_srs(geog_wkt), _srs(dst_wkt))
    n = 33
    lons = np.linspace(lon0, lon1, n)
    lats = np.linspace(lat0, lat1, n)
    pts = [(x, lat0) for x in lons] + [(x, lat1) for x in lons] + [(lon0, y) for y in lats] + [(lon1, y) for y in lats]
    out = np.array([ct.TransformPoint(x / unit_deg, y / unit_deg)[:2] for x, y in pts])
    return out[:, 0].min(), out[:, 1].min(), out[:, 0].max(), out[:, 1].max()


def processing_zones(info: RasterInfo, pixel_size_m: float) -> List[Zone]:
    """The lattice(s) a DEM is classified on at ``pixel_size_m`` metres, west to east."""
    if not info.is_geographic:
        return [_projected_zone(info, pixel_size_m)]
    lon0, lat0, lon1, lat1 = _geographic_footprint(info)
    if lat1 > UTM_MAX_LAT or lat0 < UTM_MIN_LAT:
        raise LandformError(
            f"'{info.path}' reaches latitude {max(lat1, -lat0):.1f} degrees; the processing lattice (UTM zones) "
            f"is defined from {UTM_MIN_LAT:g} to {UTM_MAX_LAT:g} degrees. Reproject the polar part to a polar "
            "stereographic CRS (e.g. EPSG:3413 or EPSG:3031) and classify it in that CRS."
        )
    unit_deg = (_srs(info.crs_wkt).GetAngularUnits() or math.pi / 180.0) * 180.0 / math.pi
    first = int(math.floor((lon0 - BLEND_DEG + 180.0) / 6.0)) + 1
    last = int(math.floor((lon1 + BLEND_DEG + 180.0) / 6.0)) + 1
    zones = []
    for z in range(first, last + 1):
        west, east = zone_edges(z)
        a, b = max(lon0, west - 2 * BLEND_DEG), min(lon1, east + 2 * BLEND_DEG)
        if b <= a or b <= west - BLEND_DEG or a >= east + BLEND_DEG:
            continue  # the DEM lies where this zone's weight is 0
        number = (z - 1) % 60 + 1
        wkt = utm_zone_wkt(info.crs_wkt, number)
        # zones beyond the antimeridian keep their own number: the lattice is the same on the Earth
        lattice = Lattice(wkt, float(pixel_size_m))
        domain = lattice.cover(*_projected_box(info.crs_wkt, wkt, a, lat0, b, lat1, unit_deg))
        zones.append(Zone(f"UTM {number}", lattice, domain, (west, east)))
    return zones


def _projected_zone(info: RasterInfo, pixel_size_m: float) -> Zone:
    unit = linear_unit_metres(info)
    gt = info.geotransform
    rx, ry = info.pixel_width * unit, info.pixel_height * unit
    tol = SAME_GRID_TOLERANCE * pixel_size_m
    if abs(rx - pixel_size_m) <= tol and abs(ry - pixel_size_m) <= tol and abs(rx - ry) <= 1e-9 * rx and gt[5] < 0:
        px = info.pixel_width
        cx, ry0 = round(gt[0] / px), round(gt[3] / px)
        lattice = Lattice(info.crs_wkt, px, gt[0] - cx * px, gt[3] - ry0 * px)
        c0, r0 = int(cx), int(-ry0)
        return Zone("own grid", lattice, (c0, r0, c0 + info.width, r0 + info.height), None, True)
    lattice = Lattice(info.crs_wkt, float(pixel_size_m) / unit)
    return Zone("CRS", lattice, lattice.cover(*dem_bounds(info)), None, False)


def describe_zones(zones: Sequence[Zone]) -> str:
    parts = [f"{z.name} ({z.width} x {z.height} cells)" for z in zones]
    return ", ".join(parts)


# ----------------------------------------------------------------------------- reading the DEM on a lattice


class LatticeReader:
    """Reads DEM values on one zone's lattice: windows of global cells, NaN for NoData and
    for cells outside the zone's domain. Opens its own GDAL handle (one per process/thread).

    Resampling is exact per cell (``errorThreshold=0``: no approximate transformer), so a
    cell's value does not depend on the window it was read in; "average" when coarsening by
    more than 1.5x, else bilinear.
    """

    def __init__(self, dem_path: str, band: int, info: RasterInfo, zone: Zone, pixel_size_m: float):
        self.zone = zone
        self.info = info
        self.ds = gdal.Open(dem_path, gdal.GA_ReadOnly)
        if self.ds is None:
            raise LandformError(f"Cannot open '{dem_path}': {gdal.GetLastErrorMsg()}")
        self.band = self.ds.GetRasterBand(band)
        self.src = self.ds
        if self.ds.RasterCount > 1:  # the warp reads one band: a virtual one-band view of the DEM
            with _quiet_gdal():  # made from the path, so it holds no reference to self.ds
                self.src = gdal.Translate("", dem_path, format="VRT", bandList=[band])
            if self.src is None:
                raise LandformError(f"Could not read band {band} of '{dem_path}': {gdal.GetLastErrorMsg()}")
        src_m = mean_cell_size_m(info)
        self.alg = "average" if pixel_size_m > 1.5 * src_m else "bilinear"
        self.scale = fixed_scale(src_m, pixel_size_m)

    def read(self, box: Box, clip: bool = True) -> np.ndarray:
        """float32 values of the global cells ``box``; NaN for NoData, where the DEM has no data,
        and (``clip``) outside the domain."""
        try:
            return self._read(box, clip)
        finally:
            # drop the DEM's blocks from GDAL's cache (by default 5 % of the RAM): each tile is read
            # once, and a mosaic of many files would otherwise fill it, whatever the block size
            self.ds.FlushCache()
            if self.src is not self.ds:
                self.src.FlushCache()

    def _read(self, box: Box, clip: bool) -> np.ndarray:
        c0, r0, c1, r1 = box
        if not clip and not self.zone.same_grid:  # cells past the domain as the DEM has them
            return self._warp(box)
        d0, e0, d1, e1 = self.zone.domain
        out = np.full((r1 - r0, c1 - c0), np.nan, dtype=np.float32)
        a0, b0, a1, b1 = max(c0, d0), max(r0, e0), min(c1, d1), min(r1, e1)
        if a1 <= a0 or b1 <= b0:
            return out
        inner = (a0, b0, a1, b1)
        vals = self._read_same_grid(inner) if self.zone.same_grid else self._warp(inner)
        out[b0 - r0 : b1 - r0, a0 - c0 : a1 - c0] = vals
        return out

    def close(self) -> None:
        """Release the GDAL handles (the view first: GDAL objects must go before what they use)."""
        self.src = self.band = None
        self.ds = None

    def _read_same_grid(self, box: Box) -> np.ndarray:
        c0, r0, c1, r1 = box
        d0, e0 = self.zone.domain[:2]
        win = Window(c0 - d0, r0 - e0, c1 - c0, r1 - r0, 0)
        return read_window(self.band, win, self.info.nodata)

    def _warp(self, box: Box) -> np.ndarray:
        lat = self.zone.lattice
        c0, r0, c1, r1 = box
        with _quiet_gdal():
            out = gdal.Warp(
                "", self.src, format="MEM", dstSRS=lat.crs_wkt, outputBounds=lat.bounds(box),
                width=c1 - c0, height=r1 - r0, resampleAlg=self.alg, errorThreshold=0.0,
                srcNodata=self.info.nodata, dstNodata=float("nan"), outputType=gdal.GDT_Float32,
                warpOptions=self.scale,
            )
        if out is None:
            raise LandformError(f"Could not resample '{self.info.path}' onto the processing lattice: {gdal.GetLastErrorMsg()}")
        return read_band(out.GetRasterBand(1), path=self.info.path).astype(np.float32, copy=False)


def lattice_dataset(lattice: Lattice, box: Box, arrays: np.ndarray):
    """An in-memory GDAL dataset holding ``arrays`` (bands, h, w) on the cells ``box``."""
    bands, h, w = arrays.shape
    mem = gdal.GetDriverByName("MEM").Create("", w, h, bands, gdal.GDT_Float32)
    mem.SetGeoTransform(lattice.geotransform(box[0], box[1]))
    mem.SetProjection(lattice.crs_wkt)
    for i in range(bands):
        mem.GetRasterBand(i + 1).WriteArray(arrays[i])
    return mem


def output_footprint(zone: Zone, out_wkt: str, out_gt, win: Window, pad: int = 2) -> Box:
    """The zone's lattice cells that a bilinear warp onto output window ``win`` reads (plus ``pad``)."""
    x0 = out_gt[0] + win.x0 * out_gt[1]
    y0 = out_gt[3] + win.y0 * out_gt[5]
    x1 = x0 + win.width * out_gt[1]
    y1 = y0 + win.height * out_gt[5]
    ct = osr.CoordinateTransformation(_srs(out_wkt), _srs(zone.lattice.crs_wkt))
    n = 17
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    pts = [(x, y0) for x in xs] + [(x, y1) for x in xs] + [(x0, y) for y in ys] + [(x1, y) for y in ys]
    p = np.array([ct.TransformPoint(float(x), float(y))[:2] for x, y in pts])
    c0, r0, c1, r1 = zone.lattice.cover(p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max())
    return (c0 - pad, r0 - pad, c1 + pad, r1 + pad)


def fixed_scale(src_cell_m: float, dst_cell_m: float) -> List[str]:
    """GDAL warp options that fix the resampling kernel's scale for a whole run.

    GDAL otherwise derives it per chunk from the shapes of the source and destination
    windows, so a cell's value would depend on the window (the block) it was warped in.
    """
    r = float(src_cell_m) / float(dst_cell_m)  # destination cells per source cell
    return [f"XSCALE={r!r}", f"YSCALE={r!r}"]


def warp_to_window(src_mem, out_wkt: str, out_gt, win: Window, scale: Sequence[str] = ()) -> np.ndarray:
    """Bilinear warp (exact per cell, kernel scale fixed by ``scale``) of an in-memory lattice
    dataset onto an output window."""
    x0 = out_gt[0] + win.x0 * out_gt[1]
    y0 = out_gt[3] + win.y0 * out_gt[5]
    bounds = (min(x0, x0 + win.width * out_gt[1]), min(y0, y0 + win.height * out_gt[5]),
              max(x0, x0 + win.width * out_gt[1]), max(y0, y0 + win.height * out_gt[5]))
    with _quiet_gdal():
        out = gdal.Warp(
            "", src_mem, format="MEM", dstSRS=out_wkt, outputBounds=bounds, width=win.width, height=win.height,
            resampleAlg="bilinear", errorThreshold=0.0, outputType=gdal.GDT_Float32,
            srcNodata=float("nan"), dstNodata=float("nan"), warpOptions=list(scale),
        )
    if out is None:
        raise LandformError(f"Could not bring the results back onto the DEM grid: {gdal.GetLastErrorMsg()}")
    return out.ReadAsArray().reshape(src_mem.RasterCount, win.height, win.width).astype(np.float32, copy=False)


def output_longitudes(info_wkt: str, out_gt, win: Window) -> np.ndarray:
    """Longitude (degrees) of the centre of every cell of an output window of a geographic raster."""
    unit = (_srs(info_wkt).GetAngularUnits() or math.pi / 180.0) * 180.0 / math.pi
    xs = out_gt[0] + (win.x0 + np.arange(win.width) + 0.5) * out_gt[1]
    return np.broadcast_to((xs * unit)[None, :], (win.height, win.width))


def mosaic_vrt(paths: Sequence[str], vrt_path: str) -> str:
    """One virtual raster over several DEM files (same CRS), for classifying them as one DEM."""
    for p in paths:
        if not os.path.isfile(p):
            raise LandformError(f"DEM file '{p}' does not exist.")
    with _quiet_gdal():
        vrt = gdal.BuildVRT(vrt_path, list(paths))
    if vrt is None:
        raise LandformError(f"Could not mosaic the DEM files: {gdal.GetLastErrorMsg()}")
    vrt = None
    return vrt_path


def main_zone(zones: Sequence[Zone], info: RasterInfo) -> Zone:
    """The zone that holds the DEM's centre (the one a single-lattice consumer uses)."""
    if len(zones) == 1:
        return zones[0]
    lon0, _, lon1, _ = _geographic_footprint(info)
    centre = (lon0 + lon1) / 2.0
    return max(zones, key=lambda z: float(zone_weights(np.array([centre]), z.lon_range)[0]))


def processing_grid(ds, info: RasterInfo, pixel_size_m: float, workdir: str, progress) -> Tuple[object, RasterInfo, bool]:
    """(dataset, info, same_grid): the whole DEM on its (main) processing lattice, as one raster.

    For consumers that need the DEM as a raster on the lattice (training chips are cut from the
    cells classification predicts); ``same_grid``: the DEM's own grid is the lattice (no copy).
    """
    from .rasters import open_raster

    zone = main_zone(processing_zones(info, pixel_size_m), info)
    if zone.same_grid:
        return ds, info, True
    progress.info(f"Resampling the DEM to {pixel_size_m:g} m cells on the processing lattice ({zone.name}).")
    path = os.path.join(workdir, "processing_dem.tif")
    reader = LatticeReader(info.path, info.band, info, zone, pixel_size_m)
    drv = gdal.GetDriverByName("GTiff")
    out = drv.Create(path, zone.width, zone.height, 1, gdal.GDT_Float32, ["TILED=YES", "BIGTIFF=IF_SAFER"])
    out.SetGeoTransform(zone.lattice.geotransform(zone.domain[0], zone.domain[1]))
    out.SetProjection(zone.lattice.crs_wkt)
    band = out.GetRasterBand(1)
    band.SetNoDataValue(float("nan"))
    c0, r0, c1, r1 = zone.domain
    for y in range(r0, r1, 1024):
        progress.check()
        band.WriteArray(reader.read((c0, y, c1, min(r1, y + 1024))), 0, y - r0)
    out = None
    return (*open_raster(path, 1), False)
