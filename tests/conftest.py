"""Shared fixtures: repository paths and the real DEM fixtures in tests/data."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEMS = {
    "fortworth": DATA / "pysheds_data" / "fortworth_3arcsec_dem.tif",
    "bigtujunga": DATA / "topotoolbox_dems" / "bigtujunga_srtm30m_utm11.tif",
    "zion": DATA / "spdatalarge" / "zion_srtm_3arcsec.tif",
    "luxembourg": DATA / "r_terra_package" / "luxembourg_elev_30arcsec.tif",
    "vermont": DATA / "whiteboxr_package" / "vermont_dem_90m_nad83utm18.tif",
    "jacksboro": DATA / "matplotlib_sample_data" / "jacksboro_fault_dem_3arcsec.tif",
    "boulder": REPO / "resources" / "sample" / "boulder_frontrange_srtmgl3.tif",
}


@pytest.fixture(scope="session")
def dems():
    """Name -> path of the real DEM fixtures (all present on a fresh clone)."""
    missing = [str(p) for p in DEMS.values() if not p.exists()]
    assert not missing, f"fixture DEMs missing: {missing}"
    return {k: str(v) for k, v in DEMS.items()}


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def rule_area(dems, tmp_path_factory):
    """A 256 x 256 cell piece of the Big Tujunga DEM and its rule-based classes (a stand-in for
    a user's landform map, not ground truth). Read-only for the tests that share it."""
    from osgeo import gdal

    from landform_plugin.core import rules

    d = tmp_path_factory.mktemp("rule_area")
    dem = str(d / "dem.tif")
    gdal.Translate(dem, dems["bigtujunga"], srcWin=[500, 100, 256, 256])
    labels = str(d / "labels.tif")
    rules.classify_raster(dem, labels)
    return {"dir": d, "dem": dem, "labels": labels}
