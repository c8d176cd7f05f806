"""Small synthetic GeoTIFFs for bad-input and edge-case tests (real DEMs serve everything else)."""
from osgeo import gdal, osr


def write_geotiff(path, arr, epsg=32611, nodata=None, dtype=gdal.GDT_Float32, bands=1,
                  gt=(500000, 30, 0, 4000000, 0, -30), crs_wkt=None):
    """Write ``arr`` into every band of a new GeoTIFF (CRS: ``crs_wkt`` if given, else ``epsg``;
    none when both are None)."""
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[1], arr.shape[0], bands, dtype)
    ds.SetGeoTransform(gt)
    if crs_wkt:
        ds.SetProjection(crs_wkt)
    elif epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(bands):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(arr)
        if nodata is not None:
            band.SetNoDataValue(nodata)
    ds = None
    return str(path)
