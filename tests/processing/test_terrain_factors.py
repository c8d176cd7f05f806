"""landform:terrainfactors inside real (headless) QGIS: outputs, georeferencing, errors, cancel."""
import csv
import os
import subprocess

import numpy as np
import pytest
from osgeo import gdal, osr

from landform_plugin.core import rasters, terrain
from tests.geotiff import write_geotiff

KEYS = ["SLOPE", "ASPECT", "HILLSHADE", "RDLS", "CURVATURE", "PROFILE_CURVATURE", "PLAN_CURVATURE"]


def test_registered_with_help_and_parameters(landform_provider):
    alg = landform_provider.algorithm("terrainfactors")
    assert alg is not None
    assert alg.displayName() == "Derive terrain factors"
    text = alg.shortHelpString()
    for needle in ("Yang", "degrees clockwise from north", "-1", "1/(100 m)", "convex", "RDLS", "metres", "z-factor", "-compute_edges"):
        assert needle in text, needle
    params = {p.name(): p for p in alg.parameterDefinitions()}
    assert {"INPUT", "BAND", "Z_FACTOR", "AZIMUTH", "ALTITUDE", "RDLS_WINDOW", "CORRELATION"} <= set(params)
    assert params["RDLS_WINDOW"].defaultValue() == pytest.approx(1000.0)
    assert params["AZIMUTH"].defaultValue() == pytest.approx(315.0)
    for k in KEYS:
        assert params[k].flags() & params[k].Flag.FlagOptional
    assert params["SLOPE"].createByDefault() and not params["ASPECT"].createByDefault()
    assert {o.name() for o in alg.outputDefinitions()} == set(KEYS) | {"CORRELATION"}


def test_all_outputs_match_the_core_and_keep_georeferencing(run_alg, dems, tmp_path):
    dem = dems["zion"]  # geographic, UInt16 with NoData 65535
    params = {"INPUT": dem, "BAND": 1, "Z_FACTOR": 1.0, "RDLS_WINDOW": 1500.0, "CORRELATION": str(tmp_path / "corr.csv")}
    for k in KEYS:
        params[k] = str(tmp_path / f"{k.lower()}.tif")
    res = run_alg("terrainfactors", params)
    assert {k: res[k] for k in KEYS} == {k: params[k] for k in KEYS}
    assert res["CORRELATION"] == params["CORRELATION"]
    src = gdal.Open(dem)
    ds0, info = rasters.open_raster(dem)
    elev = rasters.read_window(ds0.GetRasterBand(1), rasters.Window(0, 0, info.width, info.height, 0), info.nodata)
    dx, dy = rasters.cell_sizes_m(info)
    p = terrain.resolve_params({"rdls_window_m": 1500.0}, (dx[info.height // 2], dy[info.height // 2]))
    want = terrain.compute_factors_block(elev, dx, dy, terrain.FACTOR_NAMES, p, raster_box=(0, info.height, 0, info.width))
    for key, name in zip(KEYS, terrain.FACTOR_NAMES):
        ds = gdal.Open(params[key])
        assert ds.GetGeoTransform() == src.GetGeoTransform()
        got_srs, src_srs = osr.SpatialReference(ds.GetProjection()), osr.SpatialReference(src.GetProjection())
        assert got_srs.IsSame(src_srs)
        b = ds.GetRasterBand(1)
        assert b.GetNoDataValue() == (0 if name == "hillshade" else -9999)
        got = b.ReadAsArray()
        np.testing.assert_array_equal(got, terrain._to_file_values(name, want[name]))
        assert (got != b.GetNoDataValue()).mean() > 0.99
    slope = gdal.Open(params["SLOPE"]).ReadAsArray()
    assert 5 < slope.mean() < 30 and slope.max() < 90  # Zion plateaus and canyons, in degrees
    rows = list(csv.reader(open(params["CORRELATION"])))
    assert rows[0][1:9] == ["dem"] + list(terrain.FACTOR_NAMES)


def test_temporary_outputs_and_skipped_outputs(run_alg, dems, tmp_path):
    """What the dialog's defaults ask for (slope, hillshade, RDLS, surface curvature as temporary files); the rest skipped."""
    res = run_alg("terrainfactors", {"INPUT": dems["vermont"], "SLOPE": "TEMPORARY_OUTPUT", "HILLSHADE": "TEMPORARY_OUTPUT",
                                     "RDLS": "TEMPORARY_OUTPUT", "CURVATURE": "TEMPORARY_OUTPUT"})
    assert {"SLOPE", "HILLSHADE", "RDLS", "CURVATURE"} <= set(res)
    for k in ("SLOPE", "HILLSHADE", "RDLS", "CURVATURE"):
        assert os.path.exists(res[k]) and res[k].endswith(".tif")
    assert not res.get("ASPECT") and not res.get("PROFILE_CURVATURE") and not res.get("CORRELATION")
    rdls = gdal.Open(res["RDLS"]).ReadAsArray()
    assert 50 < np.median(rdls) < 700  # Green Mountains: hundreds of metres of relief per km


def test_band_and_z_factor_reach_the_core(run_alg, dems, tmp_path):
    src = gdal.Open(dems["bigtujunga"])
    arr = src.ReadAsArray().astype(np.float32)
    two = tmp_path / "two.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(two), src.RasterXSize, src.RasterYSize, 2, gdal.GDT_Float32)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    ds.GetRasterBand(1).WriteArray(np.zeros_like(arr))
    ds.GetRasterBand(2).WriteArray(arr / 0.3048)  # band 2 in feet
    ds = None
    out = str(tmp_path / "slope.tif")
    run_alg("terrainfactors", {"INPUT": str(two), "BAND": 2, "Z_FACTOR": 0.3048, "SLOPE": out})
    ref = str(tmp_path / "g.tif")
    subprocess.run(["gdaldem", "slope", dems["bigtujunga"], ref, "-compute_edges", "-q"], check=True)
    np.testing.assert_allclose(gdal.Open(out).ReadAsArray(), gdal.Open(ref).ReadAsArray(), atol=1e-3)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("band", "band 3 does not exist"),
        ("allnodata", "only NoData"),
        ("tiny", "at least 3 x 3"),
        ("rdls_window", "larger than the raster"),
        ("complex", "real numbers"),
        ("nocrs", "no coordinate reference system"),
        ("nooutput", "at least one output"),
    ],
)
def test_bad_input_gives_a_message_and_no_output(run_alg, dems, tmp_path, kind, message):
    from qgis.core import QgsProcessingException

    patch = gdal.Open(dems["vermont"]).ReadAsArray()[:60, :80].astype(np.float32)
    out = tmp_path / "out"
    params = {"SLOPE": str(out / "slope.tif"), "RDLS": str(out / "rdls.tif")}
    if kind == "band":
        params.update(INPUT=write_geotiff(tmp_path / "two.tif", patch, bands=2), BAND=3)
    elif kind == "allnodata":
        params.update(INPUT=write_geotiff(tmp_path / "nd.tif", np.full_like(patch, -9999), nodata=-9999))
    elif kind == "tiny":
        params.update(INPUT=write_geotiff(tmp_path / "tiny.tif", patch[:2, :5]))
    elif kind == "rdls_window":
        params.update(INPUT=write_geotiff(tmp_path / "small.tif", patch), RDLS_WINDOW=5000.0)
    elif kind == "complex":
        params.update(INPUT=write_geotiff(tmp_path / "c.tif", patch, dtype=gdal.GDT_CFloat32))
    elif kind == "nocrs":
        params.update(INPUT=write_geotiff(tmp_path / "nocrs.tif", patch, epsg=None))
    elif kind == "nooutput":
        params = {"INPUT": write_geotiff(tmp_path / "ok.tif", patch)}
    with pytest.raises(QgsProcessingException, match=message) as err:
        run_alg("terrainfactors", params)
    assert "Traceback" not in str(err.value)
    assert not out.exists() or os.listdir(out) == []


def test_unreadable_file_is_refused(run_alg, tmp_path):
    from qgis.core import QgsProcessingException

    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"not a raster at all")
    with pytest.raises(QgsProcessingException) as err:
        run_alg("terrainfactors", {"INPUT": str(junk), "SLOPE": str(tmp_path / "s.tif")})
    # QGIS refuses the layer before the algorithm runs ("Could not load source layer for INPUT: ...");
    # core.rasters.open_raster gives "Cannot open ..." for files QGIS loads but GDAL cannot (tests/core).
    msg = str(err.value)
    assert "Traceback" not in msg and "INPUT" in msg and "junk.tif" in msg
    assert not (tmp_path / "s.tif").exists()


def test_cancel_leaves_no_output(run_alg, dems, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    seen = []

    def on_progress(p):
        seen.append(p)
        if p > 0:
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    out = tmp_path / "out"
    params = {"INPUT": dems["boulder"], "CORRELATION": str(out / "corr.csv")}
    for k in KEYS:
        params[k] = str(out / f"{k.lower()}.tif")
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_alg("terrainfactors", params, feedback=feedback)
    assert seen and max(seen) < 100
    assert not out.exists() or os.listdir(out) == []


def test_outputs_styled_when_loaded(run_alg, dems, tmp_path):
    """Hillshade loads in grey 0-255, the other factors as a grey min-max stretch."""
    from qgis.core import QgsProcessingContext, QgsProject, QgsRasterLayer

    context = QgsProcessingContext()
    project = QgsProject()
    context.setProject(project)
    paths = {"HILLSHADE": str(tmp_path / "hs.tif"), "SLOPE": str(tmp_path / "slope.tif")}
    for key, path in paths.items():
        context.addLayerToLoadOnCompletion(path, QgsProcessingContext.LayerDetails(key, project, key))
    run_alg("terrainfactors", dict(INPUT=dems["vermont"], RDLS=None, CURVATURE=None, **paths), context=context)
    for key, path in paths.items():
        layer = QgsRasterLayer(path, key)
        project.addMapLayer(layer)
        context.layerToLoadOnCompletionDetails(path).postProcessor().postProcessLayer(layer, context, None)
    hs, slope = (project.mapLayersByName(k)[0] for k in ("HILLSHADE", "SLOPE"))
    assert hs.renderer().type() == "singlebandgray"
    ce = hs.renderer().contrastEnhancement()
    assert (ce.minimumValue(), ce.maximumValue()) == (0, 255)
    assert slope.renderer().type() == "singlebandgray"
    assert 0 <= slope.renderer().contrastEnhancement().minimumValue() < slope.renderer().contrastEnhancement().maximumValue() <= 90
