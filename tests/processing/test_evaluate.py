"""landform:evaluate inside real (headless) QGIS: numbers as outputs, zones, polygon reference."""
import csv

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from qgis.core import QgsProcessingException

from landform_plugin.core import rasters, rules


@pytest.fixture(scope="module")
def maps(dems, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_alg")
    ref = str(d / "ref.tif")
    rules.classify_raster(dems["zion"], ref)
    # a "prediction": the reference with its western third called mountain
    pred = str(d / "pred.tif")
    gdal.Translate(pred, ref)
    ds = gdal.Open(pred, gdal.GA_Update)
    a = ds.GetRasterBand(1).ReadAsArray()
    third = a.shape[1] // 3
    a[:, :third] = np.where(a[:, :third] > 0, 4, 0)
    ds.GetRasterBand(1).WriteArray(a)
    ds = None
    # two zones: west third / the rest (EPSG:4326 like the rasters)
    gt = gdal.Open(ref).GetGeoTransform()
    w, h = a.shape[1], a.shape[0]
    xs = [gt[0], gt[0] + third * gt[1], gt[0] + w * gt[1]]
    y0, y1 = gt[3], gt[3] + h * gt[5]
    zones = str(d / "zones.gpkg")
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    vds = ogr.GetDriverByName("GPKG").CreateDataSource(zones)
    lyr = vds.CreateLayer("zones", srs=srs, geom_type=ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("area", ogr.OFTString))
    for name, xa, xb in (("west", xs[0], xs[1]), ("east", xs[1], xs[2])):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("area", name)
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({xa} {y0},{xb} {y0},{xb} {y1},{xa} {y1},{xa} {y0}))"))
        lyr.CreateFeature(f)
    vds = None
    return {"ref": ref, "pred": pred, "zones": zones, "a": a, "third": third,
            "r": rasters.read_array(ref)}


def test_numbers_zones_and_report(run_alg, maps, tmp_path):
    res = run_alg("evaluate", {"INPUT": maps["pred"], "REFERENCE": maps["ref"], "ZONES": maps["zones"],
                               "ZONE_FIELD": "area", "OUTPUT": str(tmp_path / "r.md"),
                               "ZONES_CSV": str(tmp_path / "z.csv"), "CONFUSION_CSV": str(tmp_path / "c.csv")})
    r, a = maps["r"], maps["a"]
    assert res["PA"] == pytest.approx(100 * np.mean(r == a), abs=1e-3)
    assert res["PIXELS"] == r.size
    assert 0 < res["MIOU"] < 100
    rows = {row[0]: row for row in csv.reader(open(res["ZONES_CSV"]))}
    t = maps["third"]
    assert float(rows["east"][2]) == pytest.approx(100.0)
    assert float(rows["west"][2]) == pytest.approx(100 * np.mean(r[:, :t] == a[:, :t]), abs=0.01)
    assert "| west |" in open(res["OUTPUT"]).read()
    same = run_alg("evaluate", {"INPUT": maps["ref"], "REFERENCE": maps["ref"], "OUTPUT": str(tmp_path / "s.html")})
    assert same["PA"] == 100.0 and same["MIOU"] == 100.0


def test_polygon_reference_needs_its_field(run_alg, maps, tmp_path):
    with pytest.raises(QgsProcessingException, match="give its class field"):
        run_alg("evaluate", {"INPUT": maps["pred"], "REFERENCE": maps["zones"], "OUTPUT": str(tmp_path / "r.html")})
