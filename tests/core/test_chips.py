"""Chip export on real DEMs with rule-derived labels (relief in a 31 px window: < 60 m plain,
< 300 m hill, else mountain; a stand-in for a user's landform map, not ground truth)."""
import json
import os

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from scipy import ndimage

from landform_plugin.core import chips, inputs
from landform_plugin.core.errors import LandformError
from landform_plugin.core.rasters import Window, open_raster, read_window
from landform_plugin.core.terrain import window_raster_box


def relief_labels(dem_path, out_path, codes=(1, 3, 4), nodata_code=0, radius=15):
    """Write a Byte label raster on the DEM's grid from a simple relief rule; return the array."""
    ds = gdal.Open(dem_path)
    b = ds.GetRasterBand(1)
    a = b.ReadAsArray().astype(float)
    nd = b.GetNoDataValue()
    valid = np.isfinite(a) if nd is None else (a != nd) & np.isfinite(a)
    size = 2 * radius + 1
    rel = ndimage.maximum_filter(np.where(valid, a, -1e9), size) - ndimage.minimum_filter(np.where(valid, a, 1e9), size)
    lab = np.where(rel < 60, codes[0], np.where(rel < 300, codes[1], codes[2])).astype(np.uint8)
    lab[~valid] = nodata_code
    out = gdal.GetDriverByName("GTiff").Create(str(out_path), ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Byte)
    out.SetGeoTransform(ds.GetGeoTransform())
    out.SetProjection(ds.GetProjection())
    out.GetRasterBand(1).WriteArray(lab)
    out = None
    return lab


def subset(dem_path, out_path, x0, y0, w, h):
    gdal.Translate(str(out_path), dem_path, srcWin=[x0, y0, w, h])
    return str(out_path)


@pytest.fixture(scope="module")
def bt(dems, tmp_path_factory):
    d = tmp_path_factory.mktemp("chips_bt")
    dem = subset(dems["bigtujunga"], d / "bt.tif", 300, 0, 512, 384)
    lab = relief_labels(dem, d / "bt_labels.tif")
    geo = str(d / "bt_4326.tif")
    gdal.Warp(geo, dem, dstSRS="EPSG:4326", resampleAlg="bilinear")
    return {"dir": d, "dem": dem, "labels": str(d / "bt_labels.tif"), "lab": lab, "geo_dem": geo}


def test_export_matches_labels_and_classifier_inputs(bt, tmp_path):
    cfg = chips.ChipConfig(dems=[bt["dem"]], labels=bt["labels"], out_dir=str(tmp_path / "c"), chip_size=128, min_labelled=0.0)
    m = chips.export_chips(cfg)
    assert len(m["chips"]) == 4 * 3  # 512x384 in 128 px chips, no overlap
    assert m["pixel_size_m"] == pytest.approx(30.0)
    assert m["input_factors"] == ["dem"] and m["in_channels"] == 1
    assert m["normalisation"]["dem"] == inputs.default_normalisation("dem")
    assert m["code_mapping"] == {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4}
    again = chips.read_manifest(str(tmp_path / "c"))
    assert again == json.loads(json.dumps(m))
    ds, info = open_raster(bt["dem"])
    halo = inputs.halo_pixels(["dem"], m["normalisation"], 30.0)
    total = np.zeros(5, dtype=np.int64)
    for c in m["chips"]:
        x0, y0, w, h = c["window"]
        x = np.load(tmp_path / "c" / c["x"])
        y = np.load(tmp_path / "c" / c["y"])
        assert x.shape == (1, 128, 128) and x.dtype == np.float32
        assert y.shape == (128, 128) and y.dtype == np.uint8
        np.testing.assert_array_equal(y, bt["lab"][y0 : y0 + h, x0 : x0 + w])
        # the same input the classifier computes for these pixels (core.inputs, same halo)
        win = Window(x0, y0, w, h, halo)
        raw = read_window(ds.GetRasterBand(1), win, info.nodata)
        box = window_raster_box(win, info.width, info.height)  # NoData past the DEM's edge filled as classify does
        ref, _ = inputs.make_input(raw, halo, ["dem"], m["normalisation"], 30.0, raster_box=box)
        np.testing.assert_allclose(x, ref, atol=1e-5)
        assert c["class_counts"] == np.bincount(y.ravel(), minlength=5).tolist()
        total += np.asarray(c["class_counts"])
    assert total.tolist() == m["class_counts"]
    assert np.count_nonzero(total) >= 2


def test_polygon_labels_in_another_crs_with_code_mapping(bt, tmp_path):
    # relief classes coded 10/30/40, polygonised and reprojected to EPSG:4326
    lab = relief_labels(bt["dem"], tmp_path / "codes.tif", codes=(10, 30, 40), nodata_code=0)
    src = gdal.Open(str(tmp_path / "codes.tif"))
    utm = osr.SpatialReference()
    utm.ImportFromWkt(src.GetProjection())
    mem = gdal.GetDriverByName("Memory").Create("", 0, 0, 0, gdal.GDT_Unknown)
    layer = mem.CreateLayer("p", srs=utm, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("landform", ogr.OFTInteger))
    gdal.Polygonize(src.GetRasterBand(1), src.GetRasterBand(1), layer, 0)
    gpkg = str(tmp_path / "labels.gpkg")
    gdal.VectorTranslate(gpkg, mem, format="GPKG", dstSRS="EPSG:4326", layerName="zones")
    cfg = chips.ChipConfig(
        dems=[bt["dem"]], labels=gpkg + "|layername=zones", label_field="landform", out_dir=str(tmp_path / "c"),
        code_mapping=chips.parse_mapping("10:1, 30:3, 40:4"), chip_size=128, min_labelled=0.0,
    )
    m = chips.export_chips(cfg)
    expected = np.select([lab == 10, lab == 30, lab == 40], [1, 3, 4], 255)
    agree = []
    for c in m["chips"]:
        x0, y0, w, h = c["window"]
        y = np.load(tmp_path / "c" / c["y"])
        agree.append(np.mean(y == expected[y0 : y0 + h, x0 : x0 + w]))
    # reprojection to degrees and back moves polygon edges by a fraction of a pixel
    assert np.mean(agree) > 0.97
    assert set(m["sources"][0]["label_codes_found"]) <= {"10", "30", "40"}

    with pytest.raises(LandformError, match=r"class code\(s\) 40 .*not\s+cover"):
        chips.export_chips(chips.ChipConfig(
            dems=[bt["dem"]], labels=gpkg, label_field="landform", out_dir=str(tmp_path / "c2"),
            code_mapping=chips.parse_mapping("10:1,30:3"), chip_size=128))
    assert not (tmp_path / "c2").exists()
    with pytest.raises(LandformError, match="no field 'klass'"):
        chips.export_chips(chips.ChipConfig(dems=[bt["dem"]], labels=gpkg, label_field="klass",
                                            out_dir=str(tmp_path / "c3"), chip_size=128))


def test_bad_inputs_give_clear_errors(bt, tmp_path):
    # labels placed 1000 km away
    far = str(tmp_path / "far.tif")
    gdal.Translate(far, bt["labels"])
    ds = gdal.Open(far, gdal.GA_Update)
    gt = list(ds.GetGeoTransform())
    gt[0] += 1_000_000
    ds.SetGeoTransform(gt)
    ds = None
    base = dict(dems=[bt["dem"]], chip_size=128)
    nocrs = str(tmp_path / "nocrs.tif")
    src = gdal.Open(bt["labels"])
    ds = gdal.GetDriverByName("GTiff").Create(nocrs, src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.GetRasterBand(1).WriteArray(src.GetRasterBand(1).ReadAsArray())
    ds = src = None
    with pytest.raises(LandformError, match="has no coordinate reference system"):
        chips.export_chips(chips.ChipConfig(labels=nocrs, out_dir=str(tmp_path / "n"), **base))
    with pytest.raises(LandformError, match="does not overlap the DEM"):
        chips.export_chips(chips.ChipConfig(labels=far, out_dir=str(tmp_path / "a"), **base))
    with pytest.raises(LandformError, match=r"chip size \(1024 px\) is larger than the DEM"):
        chips.export_chips(chips.ChipConfig(labels=bt["labels"], out_dir=str(tmp_path / "b"), dems=[bt["dem"]], chip_size=1024))
    with pytest.raises(LandformError, match="multiple of 32"):
        chips.export_chips(chips.ChipConfig(labels=bt["labels"], out_dir=str(tmp_path / "c"), dems=[bt["dem"]], chip_size=100))
    with pytest.raises(LandformError, match="maps to class 7"):
        chips.export_chips(chips.ChipConfig(labels=bt["labels"], out_dir=str(tmp_path / "d"), code_mapping={"1": 7}, **base))
    with pytest.raises(LandformError, match="not of the form"):
        chips.parse_mapping("10-1")
    with pytest.raises(LandformError, match="not a chip folder"):
        chips.read_manifest(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["far.tif", "nocrs.tif"]  # nothing half-written


def test_pixel_size_and_ignore_strategy(bt, tmp_path):
    cfg = chips.ChipConfig(dems=[bt["dem"]], labels=bt["labels"], out_dir=str(tmp_path / "c"), chip_size=64,
                           pixel_size_m=60.0, strategy="ignore", buffer_px=2, min_labelled=0.0)
    m = chips.export_chips(cfg)
    src = m["sources"][0]
    # classification's processing grid: 60 m pixels aligned on multiples of 60 m, covering every DEM cell
    assert (src["width"], src["height"]) in {(256, 192), (257, 192), (256, 193), (257, 193)}
    assert src["geotransform"][1] == 60.0 and src["geotransform"][0] % 60 == 0
    assert src["pixel_size_m"] == pytest.approx(60.0) and m["pixel_size_m"] == 60.0
    assert len(m["chips"]) == 4 * 3
    ignored = sum(c["ignored"] for c in m["chips"])
    assert 0 < ignored < 0.6 * 256 * 192
    # geographic DEM: chips are cut from the UTM lattice classification uses
    m2 = chips.export_chips(chips.ChipConfig(dems=[bt["geo_dem"]], labels=bt["labels"], out_dir=str(tmp_path / "g"),
                                             chip_size=64, pixel_size_m=90.0, min_labelled=0.0))
    assert "Transverse_Mercator" in m2["sources"][0]["crs_wkt"] and m2["pixel_size_m"] == 90.0
    g = m2["sources"][0]
    assert len(m2["chips"]) == (g["width"] // 64) * (g["height"] // 64) >= 4
    # the warp's empty corners: no elevation, so no label (classification takes class 0 from the mask)
    lattice = chips.chip_grid(bt["geo_dem"], 90.0)
    z = lattice.ds.GetRasterBand(1).ReadAsArray()
    empty = 0
    for c in m2["chips"]:
        x0, y0, w, h = c["window"]
        y, nodata = np.load(tmp_path / "g" / c["y"]), ~np.isfinite(z[y0 : y0 + h, x0 : x0 + w])
        np.testing.assert_array_equal(y[nodata], 255)
        assert (y[~nodata] != 0).all()
        empty += int(nodata.sum())
    assert empty > 0 and m2["class_counts"][0] == 0
    assert m["label_strategy"] == {"name": "ignore", "buffer_px": 2, "seed": 0}
