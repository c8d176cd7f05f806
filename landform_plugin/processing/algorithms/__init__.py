"""The provider's algorithms: one module per algorithm, registered here.

Each entry is (module, class). Modules import only QGIS and the light parts of
``core`` at import time; torch is imported inside processAlgorithm.
"""
import importlib

_ALGORITHMS = [
    ("rule_based", "RuleBasedLandformsAlgorithm"),
    ("classify", "ClassifyLandformsAlgorithm"),
    ("terrain_factors", "TerrainFactorsAlgorithm"),
    ("train_model", "TrainModelAlgorithm"),
    ("evaluate", "EvaluateAlgorithm"),
    ("install_dependencies", "InstallDependenciesAlgorithm"),
]


def algorithm_classes():
    return [getattr(importlib.import_module(f".{module}", __name__), cls) for module, cls in _ALGORITHMS]
