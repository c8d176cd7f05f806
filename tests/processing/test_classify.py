"""landform:classifylandforms inside QGIS: outputs, georeferencing, styling on load, errors."""
import os

import numpy as np
import pytest
from osgeo import gdal, osr

import torch  # installed by make setup; a missing torch must fail, not skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from landform_plugin.core.modelfile import make_spec, save_model
    from landform_plugin.core.nets.registry import build_model

    torch.manual_seed(11)
    m = build_model("fcn_resnet", "resnet_tiny", 1, decoder_channels=32)
    spec = make_spec("fcn_resnet", "resnet_tiny", ["dem"], 90.0, 128, arch_options={"decoder_channels": 32},
                     metrics={"PA": 0.5})
    path = str(tmp_path_factory.mktemp("m") / "tiny.safetensors")
    save_model(path, m, spec)
    return path


def _params(dem, model, tmp_path, **extra):
    p = {
        "INPUT": dem,
        "BAND": 1,
        "MODEL": model,
        "PIXEL_SIZE": 0,
        "TILE_SIZE": 128,
        "OVERLAP": 0.25,
        "BATCH_SIZE": 2,
        "DEVICE": 1,  # cpu
        "OUTPUT": str(tmp_path / "classes.tif"),
        "CONFIDENCE": str(tmp_path / "confidence.tif"),
    }
    p.update(extra)
    return p


def test_algorithm_metadata(landform_provider):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("landform:classifylandforms")
    assert alg is not None and alg.displayName() == "Classify Landforms from DEM"
    names = {p.name() for p in alg.parameterDefinitions()}
    assert {"INPUT", "BAND", "MODEL", "PIXEL_SIZE", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE", "EXTENT",
            "OUTPUT", "CONFIDENCE"} <= names
    outs = {o.name() for o in alg.outputDefinitions()}
    assert {"OUTPUT", "CONFIDENCE", "MODEL_INFO", "PIXEL_SIZE_USED", "TILES"} <= outs
    help_text = alg.shortHelpString()
    assert "Yang" in help_text and "Hann" in help_text and "[m]" in alg.parameterDefinition("PIXEL_SIZE").description()


def test_run_outputs_on_the_dem_grid(run_alg, dems, tiny_model, tmp_path):
    res = run_alg("classifylandforms", _params(dems["fortworth"], tiny_model, tmp_path, PIXEL_SIZE=120))
    assert res["OUTPUT"] == str(tmp_path / "classes.tif") and os.path.isfile(res["OUTPUT"])
    assert os.path.isfile(res["CONFIDENCE"])
    assert res["PIXEL_SIZE_USED"] == 120 and res["TILES"] >= 4
    assert "resnet_tiny" in res["MODEL_INFO"]
    out, ref = gdal.Open(res["OUTPUT"]), gdal.Open(dems["fortworth"])
    assert (out.RasterXSize, out.RasterYSize) == (ref.RasterXSize, ref.RasterYSize)
    assert np.allclose(out.GetGeoTransform(), ref.GetGeoTransform(), atol=1e-12)
    assert osr.SpatialReference(out.GetProjection()).IsSame(osr.SpatialReference(ref.GetProjection()))
    conf = gdal.Open(res["CONFIDENCE"])
    assert conf.RasterCount == 6 and conf.GetRasterBand(6).GetDescription() == "Top-class confidence"
    cls = out.ReadAsArray()
    assert set(np.unique(cls)) <= {1, 2, 3, 4}


def test_layers_styled_when_loaded_on_completion(run_alg, dems, tiny_model, tmp_path):
    from qgis.core import (
        QgsPalettedRasterRenderer,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProject,
        QgsRasterLayer,
        QgsSingleBandPseudoColorRenderer,
    )

    project = QgsProject.instance()
    project.removeAllMapLayers()
    context = QgsProcessingContext()
    context.setProject(project)
    params = _params(dems["vermont"], tiny_model, tmp_path)
    for key, name in (("OUTPUT", "Landform classes"), ("CONFIDENCE", "Class confidence")):
        context.addLayerToLoadOnCompletion(params[key], QgsProcessingContext.LayerDetails(name, project, key))
    feedback = QgsProcessingFeedback()
    run_alg("classifylandforms", params, feedback=feedback, context=context)
    # what QGIS's handleAlgorithmResults does: load each layer, then run its post-processor
    loaded = {}
    for path, details in context.layersToLoadOnCompletion().items():
        layer = QgsRasterLayer(path, details.name, "gdal")
        assert layer.isValid()
        project.addMapLayer(layer)
        assert details.postProcessor() is not None
        details.postProcessor().postProcessLayer(layer, context, feedback)
        loaded[details.outputName] = layer
    renderer = loaded["OUTPUT"].renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    labels = [c.label for c in renderer.classes()]
    assert labels == ["Plain", "Platform", "Hill", "Mountain"]
    assert [c.value for c in renderer.classes()] == [1, 2, 3, 4]
    assert renderer.classes()[3].color.name() == "#a52a2a"
    legend = [text for text, _ in renderer.legendSymbologyItems()]
    assert legend == ["Plain", "Platform", "Hill", "Mountain"]
    heat = loaded["CONFIDENCE"].renderer()
    assert isinstance(heat, QgsSingleBandPseudoColorRenderer) and heat.band() == 6
    assert (heat.classificationMin(), heat.classificationMax()) == (0.0, 1.0)
    # one heatmap layer per landform class, each styled on its own band
    per_class = {lyr.name(): lyr for lyr in project.mapLayers().values() if lyr.name().endswith(" confidence") and lyr.name() != "Class confidence"}
    assert sorted(per_class) == ["Hill confidence", "Mountain confidence", "Plain confidence", "Platform confidence"]
    assert per_class["Hill confidence"].renderer().band() == 4
    assert per_class["Plain confidence"].renderer().band() == 2
    group = project.layerTreeRoot().findGroup("Class confidence by class")
    assert group is not None and len(group.findLayers()) == 4
    project.removeAllMapLayers()
    project.layerTreeRoot().removeChildNode(group)


def test_not_loaded_means_no_post_processor(run_alg, dems, tiny_model, tmp_path):
    from qgis.core import QgsProcessingContext

    context = QgsProcessingContext()
    run_alg("classifylandforms", _params(dems["vermont"], tiny_model, tmp_path), context=context)
    assert context.layersToLoadOnCompletion() == {}


def test_errors_are_processing_exceptions(run_alg, dems, tmp_path):
    from qgis.core import QgsProcessingException

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(QgsProcessingException, match="not a valid .safetensors"):
        run_alg("classifylandforms", _params(dems["vermont"], str(bad), tmp_path))
    from landform_plugin.processing.algorithms import classify

    if not os.path.isfile(classify.DEFAULT_MODEL):
        with pytest.raises(QgsProcessingException, match="bundled model"):
            run_alg("classifylandforms", _params(dems["vermont"], "", tmp_path))
    assert not (tmp_path / "classes.tif").exists()


def test_bundled_qml_styles_load(run_alg, dems, tiny_model, tmp_path):
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer, QgsSingleBandPseudoColorRenderer

    from landform_plugin.processing.styling import qml_path

    res = run_alg("classifylandforms", _params(dems["vermont"], tiny_model, tmp_path))
    cls = QgsRasterLayer(res["OUTPUT"], "c", "gdal")
    msg, ok = cls.loadNamedStyle(qml_path("classes"))
    assert ok, msg
    assert isinstance(cls.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in cls.renderer().classes()] == ["Plain", "Platform", "Hill", "Mountain"]
    conf = QgsRasterLayer(res["CONFIDENCE"], "p", "gdal")
    for name, band in (("heatmap", 6), ("heatmap_hill", 4)):
        msg, ok = conf.loadNamedStyle(qml_path(name))
        assert ok, msg
        assert isinstance(conf.renderer(), QgsSingleBandPseudoColorRenderer) and conf.renderer().band() == band


def test_confidence_output_is_optional(run_alg, dems, tiny_model, tmp_path):
    out = tmp_path / "classes_only.tif"
    res = run_alg("classifylandforms", {"INPUT": dems["vermont"], "MODEL": tiny_model, "OUTPUT": str(out)})
    assert res["OUTPUT"] == str(out) and not res["CONFIDENCE"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tif") == ["classes_only.tif"]
    classes = gdal.Open(str(out)).ReadAsArray()
    assert set(np.unique(classes)) <= {1, 2, 3, 4}


@pytest.mark.slow
def test_blocks_on_a_dask_cluster_from_qgis(run_alg, dems, tiny_model, tmp_path):
    """The advanced 'Dask scheduler address': the blocks run on a real cluster (two workers on
    127.0.0.1) with the same result as in QGIS's own process; progress follows the finished blocks;
    Cancel cancels the cluster's blocks and leaves no output."""
    import time

    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    from tests.dask_cluster import LocalDaskCluster

    here = run_alg("classifylandforms", _params(dems["bigtujunga"], tiny_model, tmp_path, PIXEL_SIZE=30))
    ref = gdal.Open(here["OUTPUT"]).ReadAsArray()
    with LocalDaskCluster(tmp_path / "cluster", workers=2) as cluster:
        out = tmp_path / "dask"
        out.mkdir()
        fb = QgsProcessingFeedback()
        steps = []
        fb.progressChanged.connect(steps.append)
        res = run_alg("classifylandforms", _params(dems["bigtujunga"], tiny_model, out, PIXEL_SIZE=30,
                                                   SCHEDULER=cluster.address, BLOCK_SIZE=256), feedback=fb)
        assert (gdal.Open(res["OUTPUT"]).ReadAsArray() == ref).all()
        assert len(set(int(s) for s in steps)) >= 3  # progress moved with the blocks
        cancelled = tmp_path / "cancelled"
        cancelled.mkdir()
        fb = QgsProcessingFeedback()
        fb.progressChanged.connect(lambda p: fb.cancel() if p > 5 else None)
        with pytest.raises(QgsProcessingException):
            run_alg("classifylandforms", _params(dems["bigtujunga"], tiny_model, cancelled, PIXEL_SIZE=30,
                                                 SCHEDULER=cluster.address, BLOCK_SIZE=128), feedback=fb)
        assert os.listdir(cancelled) == []
        with cluster.client() as c:  # nothing of the cancelled run is left on the cluster
            deadline = time.monotonic() + 30
            while any(c.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not any(c.processing().values())
