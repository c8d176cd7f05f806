"""The plugin as the command line sees it: enabled, listed, and an algorithm run."""
import pytest
from osgeo import gdal

pytestmark = pytest.mark.e2e


def test_plugin_enabled_and_listed(qgis_process):
    proc = qgis_process("plugins")
    assert "landform_classifier" in proc.stdout
    listing = qgis_process.json("list")
    provider = listing["providers"]["landform"]
    assert provider["name"] == "Landform classification"
    listed = set(provider["algorithms"])
    from landform_plugin.processing.algorithms import _ALGORITHMS

    assert len(listed) == len(_ALGORITHMS) and len(listed) >= 1
    assert "landform:terrainfactors" in listed


def test_terrain_factors_from_command_line(qgis_process, dems, tmp_path):
    slope = tmp_path / "slope.tif"
    result = qgis_process.json(
        "run", "landform:terrainfactors", "--",
        f"INPUT={dems['vermont']}", f"SLOPE={slope}",
    )
    assert result["results"]["SLOPE"] == str(slope)
    src, out = gdal.Open(dems["vermont"]), gdal.Open(str(slope))
    assert out.GetGeoTransform() == src.GetGeoTransform()
    assert (out.RasterXSize, out.RasterYSize) == (src.RasterXSize, src.RasterYSize)
    arr = out.GetRasterBand(1).ReadAsArray()
    valid = arr[arr != out.GetRasterBand(1).GetNoDataValue()]
    assert valid.size > 0.9 * arr.size
    assert 0 <= valid.min() and valid.max() <= 90 and valid.mean() > 1
