"""Command line for machines without QGIS (a GPU box, a cluster worker).

    python -m landform_plugin.core --help

Each core module that offers a command defines ``register_cli(subparsers)``;
torch is imported only by the command that needs it.
"""
import argparse
import importlib
import sys

from .errors import Cancelled, LandformError, MissingDependency

# Modules that contribute sub-commands, in the order --help lists them.
CLI_MODULES = ["demo", "terrain", "predict", "rules", "chips", "train", "evaluate"]
# A GPU box may have torch and numpy but no GDAL: `train` must still work there
# (tests/core/test_cli.py), so a command whose module needs a missing optional
# package is left out and named in --help.
OPTIONAL_PACKAGES = {"osgeo": "GDAL's Python bindings", "scipy": "scipy", "matplotlib": "matplotlib"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m landform_plugin.core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    missing = []
    for name in CLI_MODULES:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            root = (exc.name or "").split(".")[0]
            if root not in OPTIONAL_PACKAGES:
                raise
            missing.append(f"'{name}' (needs {OPTIONAL_PACKAGES[root]})")
            continue
        module.register_cli(sub)
    if missing:
        parser.epilog = "Not available on this machine: " + ", ".join(missing) + "."
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (LandformError, MissingDependency, Cancelled) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: finished blocks stay in the run folder for the same command
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
