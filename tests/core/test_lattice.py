"""The processing lattice is fixed on the Earth: a crop, or a tile of a continental mosaic, gets the
classes the whole DEM gets, away from the cut.

Real relief only: the bundled Boulder SRTM tile (EPSG:4326), the same tile reprojected to UTM
(a projected DEM), and a 20-degree-wide mosaic of the repository's real DEMs placed side by side.
"""
import math
import os

import numpy as np
import pytest
from osgeo import gdal, osr

import torch  # noqa: F401  (installed by make setup; a missing torch must fail, not skip)

from landform_plugin.core.errors import LandformError
from landform_plugin.core.grid import BLEND_DEG, processing_zones, zone_weights
from landform_plugin.core.predict import classify_raster
from landform_plugin.core.rasters import cell_sizes_m, open_raster

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(REPO, "models", "default_model.safetensors")
TINY = os.path.join(REPO, "tests", "data", "models", "tiny_relief_60m.safetensors")


def read(path):
    return gdal.Open(path).ReadAsArray()


def far_from_cut(info, width, distance_m):
    """Mask (h, width) of crop cells farther than ``distance_m`` from the crop's right edge (the cut)."""
    dx, _ = cell_sizes_m(info, 0, info.height)
    cols_from_cut = width - 0.5 - np.arange(width)
    return (cols_from_cut[None, :] * dx[:, None]) > distance_m


@pytest.fixture(scope="module")
def boulder_utm(dems, tmp_path_factory):
    """Boulder reprojected to UTM zone 13 at 90 m: a real projected DEM."""
    p = str(tmp_path_factory.mktemp("utm") / "boulder_utm13.tif")
    gdal.Warp(p, dems["boulder"], dstSRS="EPSG:32613", xRes=90, yRes=90, resampleAlg="bilinear",
              targetAlignedPixels=True, dstNodata=-32768)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("which", ["geographic", "projected"])
def test_crop_equals_whole_away_from_the_cut(dems, boulder_utm, tmp_path, which):
    dem = dems["boulder"] if which == "geographic" else boulder_utm
    _, info = open_raster(dem)
    crop_w = int(info.width * 0.6)
    crop = str(tmp_path / "crop.tif")
    gdal.Translate(crop, dem, srcWin=[0, 0, crop_w, info.height])
    whole, part = str(tmp_path / "whole.tif"), str(tmp_path / "part.tif")
    classify_raster(dem, DEFAULT, whole, device="cpu")
    classify_raster(crop, DEFAULT, part, device="cpu")
    a, b = read(whole)[:, :crop_w], read(part)
    far = far_from_cut(info, crop_w, 10_000.0) & (a > 0)
    agree = (a[far] == b[far]).mean()
    near = ~far_from_cut(info, crop_w, 1_000.0) & (a > 0)
    print(f"{which}: {far.sum()} cells > 10 km from the cut agree {100 * agree:.3f} %; "
          f"within 1 km {100 * (a[near] == b[near]).mean():.2f} %")
    assert far.sum() > 20_000
    assert agree >= 0.999


def _mosaic_20_degrees(dems, folder):
    """Real DEMs at 30 arcsec placed side by side from 120 W to 100 W (24 slots of 5/6 degree)."""
    names = ["boulder", "zion", "jacksboro", "fortworth", "bigtujunga", "vermont"]
    n, cells = 24, 100  # 100 cells of 30" = 5/6 degree per slot
    slots = []
    for i in range(n):
        src = dems[names[i % len(names)]]
        ds = gdal.Warp("", src, format="MEM", dstSRS="EPSG:4326", width=cells, height=cells, resampleAlg="average",
                       dstNodata=-32768, outputType=gdal.GDT_Float32)
        a = ds.ReadAsArray()
        a[a == -32768] = np.nan
        a = np.where(np.isfinite(a), a, np.nanmean(a))  # slots are whole (a sea of mean height is no landform)
        slots.append(a + (i % 3) * 150.0)
    arr = np.concatenate(slots, axis=1).astype(np.float32)
    path = str(folder / "mosaic_20deg.tif")
    out = gdal.GetDriverByName("GTiff").Create(path, arr.shape[1], arr.shape[0], 1, gdal.GDT_Float32)
    out.SetGeoTransform((-120.0, 1 / 120.0, 0, 41.0, 0, -1 / 120.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    out.SetProjection(srs.ExportToWkt())
    out.GetRasterBand(1).WriteArray(arr)
    out = None
    return path


@pytest.mark.slow
def test_eastern_region_of_a_20_degree_mosaic_equals_the_region_alone(dems, tmp_path):
    """The region near the eastern edge (102 W - 100 W, across the zone 13/14 blend) of a mosaic
    spanning 20 degrees of longitude gets the classes it gets when classified on its own, farther
    than 30 km from the cut (measured: 100 % there, 99.0 % of all its cells; the tiny model at
    500 m sees ~100 cells of context)."""
    mosaic = _mosaic_20_degrees(dems, tmp_path)
    _, info = open_raster(mosaic)
    zones = processing_zones(info, 500.0)
    assert [z.name for z in zones] == ["UTM 10", "UTM 11", "UTM 12", "UTM 13", "UTM 14"]  # 120 W is a zone edge
    region = str(tmp_path / "region.tif")
    gdal.Translate(region, mosaic, projWin=[-102.0, 41.0, -100.0, 40.0 + 1 / 6])
    whole, part = str(tmp_path / "whole.tif"), str(tmp_path / "part.tif")
    kw = dict(pixel_size_m=500.0, tile_size=256, device="cpu")
    classify_raster(mosaic, TINY, whole, **kw)
    classify_raster(region, TINY, part, **kw)
    b = read(part)
    cols = b.shape[1]
    a = read(whole)[:, -cols:]
    _, rinfo = open_raster(region)
    dx = cell_sizes_m(rinfo, 0, rinfo.height)[0]
    far = (np.arange(cols)[None, :] + 0.5) * dx[:, None] > 30_000.0  # the cut is the region's western edge
    agree = (a[far] == b[far]).mean()
    print(f"eastern region: {far.sum()} cells agree {100 * agree:.2f} %, all cells {100 * (a == b).mean():.2f} %")
    assert agree >= 0.99


def test_zone_weights_blend_to_one_and_scale_stays_within_a_percent():
    lon = np.linspace(-110.0, -95.0, 3001)
    total = sum(zone_weights(lon, (w, w + 6.0)) for w in (-114.0, -108.0, -102.0, -96.0))
    assert np.allclose(total[(lon > -113) & (lon < -97)], 1.0)
    # the farthest a zone is used from its central meridian: 3 degrees + the blend
    k = 0.9996 * (1 + (math.radians(3 + BLEND_DEG)) ** 2 / 2)
    assert abs(k - 1) < 0.01


def test_polar_dem_is_refused_with_advice(tmp_path):
    p = str(tmp_path / "polar.tif")
    ds = gdal.GetDriverByName("GTiff").Create(p, 10, 10, 1, gdal.GDT_Float32)
    ds.SetGeoTransform((10.0, 0.1, 0, 86.0, 0, -0.1))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    ds.SetProjection(srs.ExportToWkt())
    ds.GetRasterBand(1).Fill(100)
    ds = None
    _, info = open_raster(p)
    with pytest.raises(LandformError, match="polar stereographic"):
        processing_zones(info, 90.0)
