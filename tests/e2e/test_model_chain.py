"""The shipped graphical-modeler chain runs from qgis_process on a real DEM.

resources/models/landform_mapping.model3: DEM -> Derive terrain factors ->
Classify Landforms from DEM (bundled default model) -> area and mean slope per
landform class. Every output is checked against the DEM and against the others.
"""
import csv

import numpy as np
import pytest
from osgeo import gdal

pytestmark = pytest.mark.e2e


def test_model_chain_outputs(qgis_process, dems, repo_root, tmp_path):
    chain = repo_root / "resources" / "models" / "landform_mapping.model3"
    outputs = {
        "terrain:Slope": tmp_path / "slope.tif",
        "terrain:Hillshade": tmp_path / "hillshade.tif",
        "classify:Landform classes": tmp_path / "classes.tif",
        "classify:Landform confidence": tmp_path / "confidence.tif",
        "class_stats:Landform class areas": tmp_path / "areas.csv",
    }
    result = qgis_process.json(
        "run", chain, "--", f"dem={dems['vermont']}", *[f"{k}={v}" for k, v in outputs.items()]
    )["results"]
    assert {k: result[k] for k in outputs} == {k: str(v) for k, v in outputs.items()}

    dem = gdal.Open(dems["vermont"])
    for key in ("terrain:Slope", "terrain:Hillshade", "classify:Landform classes", "classify:Landform confidence"):
        ds = gdal.Open(str(outputs[key]))
        assert ds.GetGeoTransform() == dem.GetGeoTransform(), key
        assert (ds.RasterXSize, ds.RasterYSize) == (dem.RasterXSize, dem.RasterYSize), key

    classes = gdal.Open(str(outputs["classify:Landform classes"])).ReadAsArray()
    assert set(np.unique(classes)) <= {0, 1, 2, 3, 4}
    conf = gdal.Open(str(outputs["classify:Landform confidence"]))
    assert conf.RasterCount == 6
    probs = conf.ReadAsArray()
    valid = classes > 0
    assert np.allclose(probs[:5, valid].sum(axis=0), 1.0, atol=1e-3)
    # The top-class confidence band is the probability of the class written.
    picked = np.take_along_axis(probs[:5], classes[None].astype(int), axis=0)[0]
    assert np.allclose(picked[valid], probs[5, valid], atol=1e-3)

    slope = gdal.Open(str(outputs["terrain:Slope"])).ReadAsArray()
    with open(outputs["class_stats:Landform class areas"], newline="") as f:
        rows = {int(float(r["zone"])): r for r in csv.DictReader(f)}
    gt = dem.GetGeoTransform()
    cell_area = abs(gt[1] * gt[5])
    for code, row in rows.items():
        in_class = classes == code
        assert int(row["count"]) == int(in_class.sum())
        assert float(row["m2"]) == pytest.approx(in_class.sum() * cell_area, rel=1e-6)
        assert float(row["mean"]) == pytest.approx(float(slope[in_class].mean()), rel=1e-3)
    # Vermont's Green Mountains: the network must find mountains or hills, and
    # they must be steeper on average than any plain it finds.
    assert {3, 4} & set(rows)
    if 1 in rows:
        steep = max(float(rows[c]["mean"]) for c in (3, 4) if c in rows)
        assert float(rows[1]["mean"]) < steep
