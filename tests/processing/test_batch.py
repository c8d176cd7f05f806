""""Classify Landforms from DEM" through QGIS's real batch processing dialog.

The BatchAlgorithmDialog is built headless, one row per DEM (three CRSs:
geographic EPSG:4326, UTM 11N, NAD83 UTM 18N), filled through its own widget
wrappers, and run with runAlgorithm() exactly as its Run button does. Each
row's outputs are checked against its own DEM.
"""
import numpy as np
from osgeo import gdal

BATCH_DEMS = ["fortworth", "bigtujunga", "vermont"]


def _fill_and_run(alg, rows, tmp_path):
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from qgis.core import QgsProcessingContext

    dialog = BatchAlgorithmDialog(alg)
    panel = dialog.mainWidget()
    panel.addRow(len(rows) - panel.batchRowCount())
    assert panel.batchRowCount() == len(rows)
    context = QgsProcessingContext()
    outputs = []
    for row, dem in enumerate(rows):
        panel.wrappers[row][panel.parameter_to_column["INPUT"]].setParameterValue(dem, context)
        paths = {"OUTPUT": tmp_path / f"classes_{row}.tif", "CONFIDENCE": tmp_path / f"confidence_{row}.tif"}
        for name, path in paths.items():
            panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column[name]).setValue(str(path))
        outputs.append(paths)
    panel.checkLoadLayersOnCompletion.setChecked(False)
    try:
        dialog.runAlgorithm()
    finally:
        # Destroy the dialog and its widget wrappers now: left to interpreter exit,
        # they outlive QgsApplication and the process segfaults after the tests.
        from qgis.PyQt import sip

        sip.delete(dialog)
    return outputs


def test_batch_dialog_classifies_three_crs(landform_provider, qgis_iface, dems, tmp_path):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().createAlgorithmById("landform:classifylandforms")
    rows = [dems[name] for name in BATCH_DEMS]
    outputs = _fill_and_run(alg, rows, tmp_path)

    shares = {}
    for name, dem_path, paths in zip(BATCH_DEMS, rows, outputs):
        dem = gdal.Open(dem_path)
        classes_ds = gdal.Open(str(paths["OUTPUT"]))
        conf_ds = gdal.Open(str(paths["CONFIDENCE"]))
        assert classes_ds is not None and conf_ds is not None, f"row {name} wrote no output"
        for ds in (classes_ds, conf_ds):
            assert ds.GetGeoTransform() == dem.GetGeoTransform(), name
            assert (ds.RasterXSize, ds.RasterYSize) == (dem.RasterXSize, dem.RasterYSize), name
            assert ds.GetSpatialRef().IsSame(dem.GetSpatialRef()), name
        classes = classes_ds.ReadAsArray()
        band = dem.GetRasterBand(1)
        elev = band.ReadAsArray()
        valid = np.isfinite(elev) & (elev != band.GetNoDataValue() if band.GetNoDataValue() is not None else True)
        assert (classes[valid] >= 1).all() and (classes[valid] <= 4).all(), name
        assert (classes[~valid] == 0).all(), name
        top = conf_ds.GetRasterBand(conf_ds.RasterCount).ReadAsArray()
        assert (top[valid] >= 0.2).all() and (top[valid] <= 1.0 + 1e-6).all(), name
        shares[name] = np.bincount(classes[valid], minlength=5) / valid.sum()

    # Each row was classified on its own DEM: the prairie has more plain than the
    # San Gabriel Mountains, which have more mountain than the prairie.
    assert shares["fortworth"][1] > shares["bigtujunga"][1]
    assert shares["bigtujunga"][4] > shares["fortworth"][4]
