"""Command line for machines without QGIS (a GPU box, a cluster worker).

    python -m landform_plugin.core --help

Each core module that offers a command defines ``register_cli(subparsers)``;
torch is imported only by the command that needs it.
"""
import argparse
import importlib
import sys

from .errors import Cancelled, LandformError, MissingDependency

# Modules that contribute sub-commands, in the order --help lists them. They
# import GDAL, scipy and torch inside their commands, so `train` works on a GPU
# box that has only torch and numpy (tests/core/test_cli.py).
CLI_MODULES = ["demo", "terrain", "predict", "rules", "chips", "train", "evaluate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m landform_plugin.core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in CLI_MODULES:
        importlib.import_module(f".{name}", __package__).register_cli(sub)
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
