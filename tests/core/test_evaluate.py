"""Evaluation against hand-computed confusion matrices, with real GeoTIFF / GeoPackage files."""
import csv

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from landform_plugin.core import evaluate
from landform_plugin.core.errors import LandformError

GT = (400000.0, 30.0, 0.0, 3800000.0, 0.0, -30.0)


def write(path, arr, nodata=None, gt=GT, epsg=32611):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[1], arr.shape[0], 1, gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    if nodata is not None:
        ds.GetRasterBand(1).SetNoDataValue(nodata)
    ds.GetRasterBand(1).WriteArray(arr)
    ds = None
    return str(path)


def rect(x0, y0, x1, y1):
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
        ring.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    return poly


def polygons(path, features, field="name", epsg=32611, ftype=ogr.OFTString):
    drv = ogr.GetDriverByName("GPKG")
    ds = drv.CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    lyr = ds.CreateLayer("p", srs=srs, geom_type=ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn(field, ftype))
    for value, geom in features:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField(field, value)
        f.SetGeometry(geom)
        lyr.CreateFeature(f)
    ds = None
    return str(path)


@pytest.fixture()
def maps(tmp_path):
    ref = np.ones((6, 8), dtype=np.uint8)
    ref[:, 4:] = 4
    ref[0, :] = 255  # reference NoData: not counted
    pred = ref.copy()
    pred[0, :] = 3
    pred[1:3, 3] = 4  # two plain pixels called mountain
    pred[5, 4:6] = 3  # two mountain pixels called hill
    pred[4, 7] = 0  # classified NoData -> class 0 "no data"
    return {
        "ref": write(tmp_path / "ref.tif", ref, nodata=255),
        "pred": write(tmp_path / "pred.tif", pred, nodata=0),
        "dir": tmp_path,
    }


def expected_cm():
    cm = np.zeros((5, 5), dtype=np.int64)
    cm[1, 1], cm[1, 4], cm[4, 4], cm[4, 3], cm[4, 0] = 18, 2, 17, 2, 1
    return cm


def test_raster_reference_by_hand(maps):
    d = maps["dir"]
    res = evaluate.evaluate(maps["pred"], maps["ref"], confusion_csv=str(d / "cm.csv"), report=str(d / "r.html"))
    np.testing.assert_array_equal(res.scores.confusion, expected_cm())
    assert res.pa == pytest.approx(35 / 40)
    iou = res.scores.iou
    assert iou[0] == 0 and iou[1] == pytest.approx(0.9) and np.isnan(iou[2]) and iou[3] == 0
    assert iou[4] == pytest.approx(17 / 22)
    assert res.miou == pytest.approx((0 + 0.9 + 0 + 17 / 22) / 4)
    assert res.scores.recall[4] == pytest.approx(17 / 20) and res.scores.precision[4] == pytest.approx(17 / 19)
    rows = list(csv.reader(open(d / "cm.csv")))
    assert rows[2][1:6] == ["0", "18", "0", "0", "2"]
    html = open(d / "r.html").read()
    assert "PA 87.50 %" in html and "data:image/png;base64," in html
    assert open(res.files["confusion_png"], "rb").read(4) == b"\x89PNG"


def test_polygon_reference_with_codes_zones_and_markdown(maps):
    d = maps["dir"]
    x0, y0 = GT[0], GT[3]
    # reference polygons coded 10 (plain) / 40 (mountain) over rows 1-5; row 0 unlabelled
    ref = polygons(d / "ref.gpkg", [(10, rect(x0, y0 - 180, x0 + 120, y0 - 30)), (40, rect(x0 + 120, y0 - 180, x0 + 240, y0 - 30))],
                   field="code", ftype=ogr.OFTInteger)
    zones = polygons(d / "zones.gpkg", [("west", rect(x0, y0 - 180, x0 + 120, y0)), ("east", rect(x0 + 120, y0 - 180, x0 + 240, y0))])
    res = evaluate.evaluate(maps["pred"], ref, reference_field="code", code_mapping={"10": 1, "40": 4}, zones=zones,
                            zone_field="name", zones_csv=str(d / "z.csv"), report=str(d / "r.md"))
    np.testing.assert_array_equal(res.scores.confusion, expected_cm())
    z = {r["zone"]: r["scores"] for r in res.zones}
    assert z["west"].pa == pytest.approx(18 / 20) and z["east"].pa == pytest.approx(17 / 20)
    assert z["west"].total == 20 and z["east"].total == 20
    rows = list(csv.reader(open(d / "z.csv")))
    assert rows[1][:4] == ["west", "20", "90.00", f"{100 * z['west'].miou:.2f}"]
    md = open(d / "r.md").read()
    assert "**PA 87.50 %**" in md and "](r_confusion.png)" in md and "| east | 20 | 85.00 |" in md
    with pytest.raises(LandformError, match=r"class code\(s\) 40"):
        evaluate.evaluate(maps["pred"], ref, reference_field="code", code_mapping={"10": 1})


def test_bad_inputs(maps, tmp_path):
    far = write(tmp_path / "far.tif", np.ones((6, 8), dtype=np.uint8), gt=(GT[0] + 5e6,) + GT[1:])
    with pytest.raises(LandformError, match="does not overlap"):
        evaluate.evaluate(maps["pred"], far)
    weird = write(tmp_path / "weird.tif", np.full((6, 8), 7, dtype=np.uint8))
    with pytest.raises(LandformError, match=r"values \[7\] that are not classes 0-4"):
        evaluate.evaluate(weird, maps["ref"])
    with pytest.raises(LandformError, match="labels no pixel"):
        evaluate.evaluate(maps["pred"], maps["ref"], code_mapping={"1": "ignore", "4": "ignore"})


def test_cli_chips_and_evaluate(maps, tmp_path, capsys):
    from landform_plugin.core.__main__ import main

    out = tmp_path / "eval"
    assert main(["evaluate", "--classified", maps["pred"], "--reference", maps["ref"], "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PA 87.50  MIoU" in printed
    assert (out / "report.html").exists() and (out / "confusion.csv").exists() and (out / "confusion.png").exists()
    # chips on an 8 x 6 px raster: a clear error (exit 2, one sentence on stderr), no folder left
    assert main(["chips", "--dem", maps["pred"], "--labels", maps["ref"], "--chip-size", "32",
                 "--out", str(tmp_path / "c")]) == 2
    assert "error: The chip size (32 px) is larger than the DEM" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
