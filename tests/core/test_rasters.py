"""Shared raster I/O: validation messages, cell sizes in metres, atomic writers."""
import math

import numpy as np
import pytest
from osgeo import gdal

from landform_plugin.core.errors import LandformError
from landform_plugin.core.rasters import (
    GeoTiffWriter,
    Window,
    block_windows,
    cell_sizes_m,
    open_raster,
    read_window,
    require_crs,
    require_some_data,
)
from tests.geotiff import write_geotiff


def test_open_reads_nodata_and_geometry(dems):
    ds, info = open_raster(dems["fortworth"])
    assert (info.width, info.height) == (367, 359)
    assert info.nodata == -32768
    assert info.is_geographic and info.has_crs
    ds, info = open_raster(dems["bigtujunga"])
    assert not info.is_geographic and info.pixel_width == pytest.approx(30.0)


def test_bad_band_unreadable_and_complex(tmp_path):
    path = write_geotiff(tmp_path / "two.tif", np.ones((10, 10), np.float32), bands=2)
    with pytest.raises(LandformError, match="has 2 band"):
        open_raster(path, band=3)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a tiff")
    with pytest.raises(LandformError, match="Cannot open"):
        open_raster(str(junk))
    cpath = write_geotiff(tmp_path / "c.tif", np.ones((4, 4), np.float32), dtype=gdal.GDT_CFloat32)
    with pytest.raises(LandformError, match="real numbers"):
        open_raster(cpath)


def test_no_crs_and_all_nodata(tmp_path):
    path = write_geotiff(tmp_path / "nocrs.tif", np.ones((8, 8), np.float32), epsg=None)
    ds, info = open_raster(path)
    with pytest.raises(LandformError, match="no coordinate reference system"):
        require_crs(info)
    path = write_geotiff(tmp_path / "nd.tif", np.full((8, 8), -9999, np.float32), nodata=-9999)
    ds, info = open_raster(path)
    with pytest.raises(LandformError, match="only NoData"):
        require_some_data(ds, info)


def test_geographic_cell_sizes_match_ellipsoid(dems):
    ds, info = open_raster(dems["fortworth"])
    dx, dy = cell_sizes_m(info, info.height // 2, 1)
    lat = math.radians(info.geotransform[3] + (info.height // 2 + 0.5) * info.geotransform[5])
    # WGS 84 radii of curvature at this latitude, independent formula.
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    n = a / math.sqrt(1 - e2 * math.sin(lat) ** 2)
    m = a * (1 - e2) / (1 - e2 * math.sin(lat) ** 2) ** 1.5
    assert dx[0] == pytest.approx(n * math.cos(lat) * math.radians(info.pixel_width), rel=1e-9)
    assert dy[0] == pytest.approx(m * math.radians(info.pixel_height), rel=1e-9)
    # 3 arc-seconds at 32.7 deg N: ~78 m east-west, ~92 m north-south.
    assert 77 < dx[0] < 79 and 92 < dy[0] < 93


def test_read_window_pads_with_nan_and_masks_nodata(tmp_path):
    arr = np.arange(100, dtype=np.float32).reshape(10, 10)
    arr[0, 0] = -1
    path = write_geotiff(tmp_path / "a.tif", arr, nodata=-1)
    ds, info = open_raster(path)
    block = read_window(ds.GetRasterBand(1), Window(0, 0, 4, 4, halo=2), info.nodata)
    assert block.shape == (8, 8)
    assert np.isnan(block[:2]).all() and np.isnan(block[:, :2]).all()
    assert np.isnan(block[2, 2])  # NoData
    assert block[3, 3] == arr[1, 1]
    wins = block_windows(10, 7, 4, 3)
    cover = np.zeros((7, 10), int)
    for w in wins:
        cover[w.y0 : w.y0 + w.height, w.x0 : w.x0 + w.width] += 1
    assert (cover == 1).all()


def test_writer_is_atomic(tmp_path, dems):
    ds, info = open_raster(dems["vermont"])
    out = tmp_path / "o.tif"
    with pytest.raises(RuntimeError):
        with GeoTiffWriter(str(out), info, nodata=-9999) as w:
            w.write(np.zeros((info.height, info.width), np.float32), 0, 0)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with GeoTiffWriter(str(out), info, nodata=-9999, band_names=["slope"]) as w:
        w.write(np.ones((info.height, info.width), np.float32), 0, 0)
    res = gdal.Open(str(out))
    assert res.GetGeoTransform() == ds.GetGeoTransform()
    assert res.GetProjection() == ds.GetProjection()
    assert res.GetRasterBand(1).GetDescription() == "slope"
    assert res.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "ZSTD"
    assert [p.name for p in tmp_path.iterdir()] == ["o.tif"]
