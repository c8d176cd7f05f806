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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m landform_plugin.core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in CLI_MODULES:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f".{name}"):
                continue  # module not written yet
            if exc.name and exc.name.split(".")[0] == "osgeo":
                continue  # no GDAL here (a GPU box): its commands are absent, 'train' still works
            raise
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (LandformError, MissingDependency, Cancelled) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
