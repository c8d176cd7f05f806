"""Generate resources/models/landform_mapping.model3, the example model chain.

    .venv/bin/python tools/make_model_chain.py

The chain a geomorphologist runs on a new DEM, as one graphical model:

    DEM -> Derive terrain factors (slope, hillshade)
        -> Classify Landforms from DEM (classes, confidence)
        -> Raster layer zonal statistics of slope per landform class
           (area in m2 and mean slope of every class)

It is built with the QgsProcessingModelAlgorithm API rather than written by
hand, so the file stays valid for the QGIS version that writes it; the result
is committed and tested (tests/e2e/test_model_chain.py runs it with qgis_process).
"""
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "resources" / "models" / "landform_mapping.model3"


def build():
    from qgis.core import (
        QgsApplication,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource as Source,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFile,
        QgsProcessingParameterNumber,
        QgsProcessingParameterRasterLayer,
    )
    from qgis.PyQt.QtCore import QPointF

    model = QgsProcessingModelAlgorithm("Landform mapping from a DEM", "Landforms", "landform_mapping")
    model.setHelpContent(
        {
            "ALG_DESC": (
                "Derives slope and hillshade from a DEM, classifies its landforms (plain, platform, hill, "
                "mountain) with the FCN-ResNet model, and reports the area and mean slope of every landform "
                "class. Method: Yang et al. (2023), Deep learning-based automated terrain classification "
                "using high-resolution DEM data, Int. J. Appl. Earth Obs. Geoinf."
            ),
            "dem": "Digital elevation model in metres (projected or geographic CRS).",
            "model_file": "Landform model (.safetensors). Leave empty for the plugin's bundled default model.",
            "rdls_window": "Side of the square window for relief (RDLS), in metres.",
        }
    )

    def add_input(definition, x, y):
        comp = QgsProcessingModelParameter(definition.name())
        comp.setPosition(QPointF(x, y))
        model.addModelParameter(definition, comp)

    add_input(QgsProcessingParameterRasterLayer("dem", "Digital elevation model (DEM)"), 120, 60)
    model_param = QgsProcessingParameterFile(
        "model_file", "Landform model file (empty: bundled default)", QgsProcessingParameterFile.File, "safetensors",
        optional=True,
    )
    add_input(model_param, 120, 140)
    add_input(QgsProcessingParameterNumber("rdls_window", "Relief window side [m]", QgsProcessingParameterNumber.Double,
                                           1000.0, False, 90.0, 100000.0), 120, 220)

    def with_defaults(child):
        """Give every parameter the chain does not wire its algorithm's default, as the modeler does."""
        alg = QgsApplication.processingRegistry().algorithmById(child.algorithmId())
        for definition in alg.parameterDefinitions():
            if definition.isDestination() or definition.name() in child.parameterSources():
                continue
            child.addParameterSources(definition.name(), [Source.fromStaticValue(definition.defaultValue())])
        return child

    def output(child_id, child_output, name, x, y):
        out = QgsProcessingModelOutput(name)
        out.setChildId(child_id)
        out.setChildOutputName(child_output)
        out.setPosition(QPointF(x, y))
        out.setMandatory(False)
        return out

    terrain = QgsProcessingModelChildAlgorithm("landform:terrainfactors")
    terrain.setChildId("terrain")
    terrain.setDescription("Derive terrain factors")
    terrain.setPosition(QPointF(420, 80))
    terrain.addParameterSources("INPUT", [Source.fromModelParameter("dem")])
    terrain.addParameterSources("RDLS_WINDOW", [Source.fromModelParameter("rdls_window")])
    terrain.setModelOutputs(
        {
            "Slope": output("terrain", "SLOPE", "Slope", 700, 40),
            "Hillshade": output("terrain", "HILLSHADE", "Hillshade", 700, 80),
        }
    )
    model.addChildAlgorithm(with_defaults(terrain))

    classify = QgsProcessingModelChildAlgorithm("landform:classifylandforms")
    classify.setChildId("classify")
    classify.setDescription("Classify Landforms from DEM")
    classify.setPosition(QPointF(420, 220))
    classify.addParameterSources("INPUT", [Source.fromModelParameter("dem")])
    classify.addParameterSources("MODEL", [Source.fromModelParameter("model_file")])
    classify.setModelOutputs(
        {
            "Landform classes": output("classify", "OUTPUT", "Landform classes", 700, 200),
            "Landform confidence": output("classify", "CONFIDENCE", "Landform confidence", 700, 240),
        }
    )
    model.addChildAlgorithm(with_defaults(classify))

    stats = QgsProcessingModelChildAlgorithm("native:rasterlayerzonalstats")
    stats.setChildId("class_stats")
    stats.setDescription("Area and mean slope per landform class")
    stats.setPosition(QPointF(420, 360))
    stats.addParameterSources("INPUT", [Source.fromChildOutput("terrain", "SLOPE")])
    stats.addParameterSources("BAND", [Source.fromStaticValue(1)])
    stats.addParameterSources("ZONES", [Source.fromChildOutput("classify", "OUTPUT")])
    stats.addParameterSources("ZONES_BAND", [Source.fromStaticValue(1)])
    stats.addParameterSources("REF_LAYER", [Source.fromStaticValue(0)])  # 0 = the input (slope) grid
    stats.setModelOutputs(
        {"Landform class areas": output("class_stats", "OUTPUT_TABLE", "Landform class areas", 700, 360)}
    )
    model.addChildAlgorithm(with_defaults(stats))
    return model


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(REPO))
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    plugins = os.path.join(QgsApplication.pkgDataPath(), "python", "plugins")
    sys.path.append(plugins)  # QGIS's own "processing" plugin
    from processing.core.Processing import Processing

    Processing.initialize()
    from landform_plugin.processing.provider import LandformProvider

    provider = LandformProvider()  # keep a reference: the registry does not own Python objects
    QgsApplication.processingRegistry().addProvider(provider)
    model = build()
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    if not model.toFile(str(TARGET)):
        print(f"could not write {TARGET}", file=sys.stderr)
        return 1
    ok, errors = model.validate() if hasattr(model, "validate") else (True, [])
    if not ok:
        print("model does not validate:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
