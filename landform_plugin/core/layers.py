"""Labels and polygon layers placed on a DEM's grid: a raster of class codes (warped
NEAREST onto the grid) or a polygon layer with a class field (rasterised at pixel
centres), user codes mapped to model classes. Shared by chip export (training
labels) and evaluation (reference maps and zones).
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from osgeo import gdal, ogr, osr

from .errors import LandformError
from .label_strategies import IGNORE_INDEX
from .rasters import READ_HINT, RasterInfo, _quiet_gdal, _srs, open_dataset, read_band


@dataclass
class Grid:
    """The processing grid of one DEM: an in-memory float32 raster with NaN for NoData."""

    ds: gdal.Dataset
    info: RasterInfo
    pixel_size_m: float
    source: str


# ----------------------------------------------------------------------------- code mapping


def parse_mapping(text: Optional[str]) -> Optional[Dict[str, Union[int, str]]]:
    """'10:1, 20:2, 99:ignore' -> {'10': 1, '20': 2, '99': 'ignore'} (None for empty)."""
    if text is None or not str(text).strip():
        return None
    out: Dict[str, Union[int, str]] = {}
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if ":" not in part and "=" not in part:
            raise LandformError(f"Class mapping entry '{part}' is not of the form 'code:class' (e.g. '10:1').")
        key, _, value = part.replace("=", ":").partition(":")
        key, value = key.strip(), value.strip()
        if value.lower() in ("ignore", "255", "-"):
            out[code_key(key)] = "ignore"
        else:
            try:
                out[code_key(key)] = int(value)
            except ValueError:
                raise LandformError(f"Class mapping entry '{part}': '{value}' is not a class number or 'ignore'.") from None
    return out


def code_key(value) -> str:
    """Normalise a user code to a string key: 3, 3.0 and '3' are the same code."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    s = str(value).strip()
    try:
        f = float(s)
        return str(int(f)) if f.is_integer() else repr(f)
    except ValueError:
        return s


def resolve_mapping(mapping, num_classes: int) -> Dict[str, int]:
    """Keys as code strings, values model classes (IGNORE_INDEX for 'ignore'); checked."""
    if mapping is None:
        mapping = {str(c): c for c in range(num_classes)}
    out = {}
    for k, v in mapping.items():
        if isinstance(v, str) and v.lower() == "ignore":
            out[code_key(k)] = IGNORE_INDEX
            continue
        try:
            c = int(v)
        except (TypeError, ValueError):
            raise LandformError(f"Class mapping: '{k}' maps to '{v}', which is not a class number.") from None
        if not (0 <= c < num_classes or c == IGNORE_INDEX):
            raise LandformError(f"Class mapping: '{k}' maps to class {c}, but the model's classes are 0-{num_classes - 1}.")
        out[code_key(k)] = c
    return out


# ----------------------------------------------------------------------------- labels onto a grid


def labels_on_grid(labels: str, grid: Grid, label_field: Optional[str] = None):
    """User label codes on ``grid``: (int32 array of indices into ``codes``, list of code keys).

    Index -1 means "no label". Raises LandformError when the labels do not
    overlap the DEM.
    """
    if not labels:
        raise LandformError("No labels were given.")
    path, layer_name = split_layer(labels)
    rds = open_dataset(path, gdal.OF_RASTER) if not label_field else None
    if rds is not None and rds.RasterCount > 0:
        return _raster_labels_on_grid(rds, path, grid)
    return _vector_labels_on_grid(labels, label_field, grid)


def split_layer(uri: str):
    """'file.gpkg|layername=zones' -> ('file.gpkg', 'zones')."""
    path, _, rest = str(uri).partition("|")
    layer = None
    for part in rest.split("|"):
        if part.startswith("layername="):
            layer = part.split("=", 1)[1]
    return path, layer


def _raster_labels_on_grid(rds, path: str, grid: Grid):
    gi = grid.info
    wkt = rds.GetProjection() or ""
    if not wkt:
        raise LandformError(
            f"The label raster '{path}' has no coordinate reference system, so it cannot be placed on the DEM. "
            "Assign its CRS first."
        )
    gt = rds.GetGeoTransform()
    linfo = RasterInfo(path, 1, rds.RasterXSize, rds.RasterYSize, rds.RasterCount, tuple(gt), wkt, None, "")
    lb = _transform_bounds(_bounds(linfo), wkt, gi.crs_wkt)
    if not _overlaps(lb, _bounds(gi)):
        raise LandformError(
            f"The label raster '{path}' ({_describe_crs(wkt)}) does not overlap the DEM '{grid.source}' "
            f"({_describe_crs(gi.crs_wkt)}): check that both are in the right place and their CRSs are set correctly."
        )
    band = rds.GetRasterBand(1)
    src_nodata = band.GetNoDataValue()
    xmin, ymin, xmax, ymax = _bounds(gi)
    with _quiet_gdal():
        warped = gdal.Warp(
            "", _single_band(rds, 1), format="MEM", outputBounds=(xmin, ymin, xmax, ymax), width=gi.width, height=gi.height,
            dstSRS=gi.crs_wkt, resampleAlg="near", outputType=gdal.GDT_Float64,
            srcNodata=src_nodata, dstNodata=float("nan"), multithread=False,
        )
    if warped is None:
        raise LandformError(f"Could not place the label raster '{path}' on the DEM grid: {gdal.GetLastErrorMsg()}")
    arr = read_band(warped.GetRasterBand(1), path=path)
    finite = np.isfinite(arr)
    values = np.unique(arr[finite])
    codes = [code_key(v) for v in values]
    idx = np.full(arr.shape, -1, dtype=np.int32)
    if values.size:
        idx[finite] = np.searchsorted(values, arr[finite]).astype(np.int32)
    return idx, codes


def vector_layer(uri: str, what: str, field_name: Optional[str] = None):
    """(dataset, layer, field names) of the polygon layer ``uri`` ('file|layername=x'); the
    dataset must stay referenced while the layer is used. ``field_name`` must be one of the fields."""
    path, layer_name = split_layer(uri)
    vds = open_dataset(path, gdal.OF_VECTOR)
    if vds is None:
        raise LandformError(f"Cannot open the {what} layer '{uri}' (not a raster or vector file GDAL reads). {READ_HINT}")
    layer = vds.GetLayerByName(layer_name) if layer_name else vds.GetLayer(0)
    if layer is None:
        raise LandformError(f"'{path}' has no layer {layer_name or ''}.")
    defn = layer.GetLayerDefn()
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    if field_name and field_name not in names:
        raise LandformError(f"The {what} layer '{path}' has no field '{field_name}'; its fields are {', '.join(names) or 'none'}.")
    return vds, layer, names


def _vector_labels_on_grid(labels: str, label_field: Optional[str], grid: Grid):
    vds, layer, names = vector_layer(labels, "label", label_field)
    if not label_field:
        raise LandformError(f"Labels '{split_layer(labels)[0]}' are a vector layer: name the field holding the class code "
                            f"(fields: {', '.join(names)}).")

    def code(feat):
        if feat.IsFieldNull(label_field) or not feat.IsFieldSet(label_field):
            return None
        return code_key(feat.GetField(label_field))

    return polygons_on_grid(layer, grid, code, f"label layer '{split_layer(labels)[0]}'")


def zones_on_grid(zones: str, grid: Grid, zone_field: Optional[str] = None):
    """(int32 zone index per pixel, -1 outside every zone; zone names) for a polygon layer."""
    vds, layer, _ = vector_layer(zones, "zone", zone_field)

    def name(feat):
        return str(feat.GetField(zone_field)) if zone_field else f"zone {feat.GetFID()}"

    return polygons_on_grid(layer, grid, name, f"zone layer '{zones}'")


def polygons_on_grid(layer, grid: Grid, key, what: str):
    """Rasterise a polygon layer onto ``grid`` (reprojecting it): (int32 index per cell, -1
    outside every polygon; the keys in index order).

    ``key(feature)`` gives the feature's class code or zone name, None to skip it;
    features with the same key share an index. ``what`` names the layer in messages.
    Shared by label maps (chips) and evaluation zones (evaluate).
    """
    gi = grid.info
    lsrs = layer.GetSpatialRef()
    if lsrs is None:
        raise LandformError(f"The {what} has no coordinate reference system; assign one first.")
    if hasattr(lsrs, "SetAxisMappingStrategy"):
        lsrs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    dsrs = _srs(gi.crs_wkt)
    ct = None if lsrs.IsSame(dsrs) else osr.CoordinateTransformation(lsrs, dsrs)
    mem_v = ogr.GetDriverByName("Memory").CreateDataSource("polygons")
    mlayer = mem_v.CreateLayer("polygons", srs=dsrs, geom_type=ogr.wkbMultiPolygon)
    mlayer.CreateField(ogr.FieldDefn("idx", ogr.OFTInteger))
    keys: List[str] = []
    index: Dict[str, int] = {}
    layer.ResetReading()
    gbounds = _bounds(gi)
    any_overlap = False
    for feat in layer:
        geom = feat.GetGeometryRef()
        k = key(feat) if geom is not None else None
        if k is None:
            continue
        geom = geom.Clone()
        if ct is not None and geom.Transform(ct) != 0:
            continue
        env = geom.GetEnvelope()  # minx, maxx, miny, maxy
        any_overlap |= _overlaps((env[0], env[2], env[1], env[3]), gbounds)
        if k not in index:
            index[k] = len(keys)
            keys.append(k)
        f = ogr.Feature(mlayer.GetLayerDefn())
        f.SetGeometry(geom)
        f.SetField("idx", index[k])
        mlayer.CreateFeature(f)
    if not any_overlap:
        raise LandformError(
            f"The {what} ({_describe_crs(lsrs.ExportToWkt())}) does not overlap '{grid.source}' "
            f"({_describe_crs(gi.crs_wkt)}): check that both are in the right place and their CRSs are set correctly."
        )
    mem = gdal.GetDriverByName("MEM").Create("", gi.width, gi.height, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(list(gi.geotransform))
    mem.SetProjection(gi.crs_wkt)
    mem.GetRasterBand(1).Fill(-1)
    with _quiet_gdal():
        err = gdal.RasterizeLayer(mem, [1], mlayer, options=["ATTRIBUTE=idx"])
    if err != 0:
        raise LandformError(f"Could not rasterise the {what}: {gdal.GetLastErrorMsg()}")
    return read_band(mem.GetRasterBand(1), path=what).astype(np.int32), keys


def model_labels(idx: np.ndarray, codes: Sequence[str], mapping: Dict[str, int], dem_valid: np.ndarray, source: str) -> np.ndarray:
    """uint8 model classes: 0 where the DEM has no data, mapped codes elsewhere, 255 unlabelled."""
    present = set(np.unique(idx[(idx >= 0) & dem_valid]).tolist())
    unknown = [codes[i] for i in sorted(present) if codes[i] not in mapping]
    if unknown:
        known = ", ".join(sorted(mapping, key=lambda s: (len(s), s)))
        raise LandformError(
            f"The labels for '{source}' hold class code(s) {', '.join(unknown[:20])} that the class mapping does not "
            f"cover (it maps {known}). Add them to the mapping (e.g. '{unknown[0]}:1', or '{unknown[0]}:ignore')."
        )
    lut = np.array([mapping.get(c, IGNORE_INDEX) for c in codes] + [IGNORE_INDEX], dtype=np.uint8)
    out = lut[np.where(idx >= 0, idx, len(codes))]
    out[~dem_valid] = 0
    return out


# ----------------------------------------------------------------------------- geometry


def _single_band(ds, band: int):
    """A VRT view of one band (gdal.Warp in GDAL < 3.7 has no band selection)."""
    if ds.RasterCount == 1:
        return ds
    return gdal.Translate("", ds, format="VRT", bandList=[int(band)])


def _bounds(info: RasterInfo):
    gt = info.geotransform
    x0, y0 = gt[0], gt[3]
    x1, y1 = x0 + gt[1] * info.width, y0 + gt[5] * info.height
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def _transform_bounds(bounds, src_wkt: str, dst_wkt: str):
    """Bounds of ``bounds`` (in src CRS) in the dst CRS, densified along the edges."""
    src, dst = _srs(src_wkt), _srs(dst_wkt)
    if src.IsSame(dst):
        return bounds
    ct = osr.CoordinateTransformation(src, dst)
    xmin, ymin, xmax, ymax = bounds
    pts = []
    for t in np.linspace(0, 1, 21):
        pts += [(xmin + t * (xmax - xmin), ymin), (xmin + t * (xmax - xmin), ymax),
                (xmin, ymin + t * (ymax - ymin)), (xmax, ymin + t * (ymax - ymin))]
    xs, ys = [], []
    for x, y in pts:
        try:
            tx, ty, *_ = ct.TransformPoint(float(x), float(y))
        except Exception:  # noqa: BLE001 - points outside the target CRS's area
            continue
        if math.isfinite(tx) and math.isfinite(ty):
            xs.append(tx)
            ys.append(ty)
    if not xs:
        return None
    return min(xs), min(ys), max(xs), max(ys)


def _overlaps(a, b) -> bool:
    return a is not None and b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _describe_crs(wkt: str) -> str:
    if not wkt:
        return "no CRS"
    s = _srs(wkt)
    code = s.GetAuthorityCode(None)
    name = s.GetName() or "unknown"
    return f"{s.GetAuthorityName(None)}:{code} ({name})" if code else name
