"""Build the plugin zip that QGIS's "Install from ZIP" accepts, and check it.

    python tools/package.py --out dist

The zip holds one folder, ``landform_classifier/``, with the files git tracks
under the plugin's run-time paths (no tests, benchmarks, tooling or dotfiles)
and the default model. The check reopens the zip and verifies the layout and
metadata.txt, so a broken package fails here rather than in a user's QGIS.
"""
import argparse
import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGIN_NAME = "landform_classifier"
# What a user's QGIS needs at run time; everything else stays out of the zip.
RUNTIME_PATHS = ["metadata.txt", "__init__.py", "LICENSE", "README.md", "landform_plugin", "models", "resources"]
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
REQUIRED_METADATA = ["name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository"]
DEFAULT_MODEL = "models/default_model.safetensors"


def tracked_files():
    out = subprocess.run(
        ["git", "ls-files", "-z", "--", *RUNTIME_PATHS], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    files = [f for f in out.split("\0") if f]
    return sorted(f for f in files if not f.endswith(EXCLUDED_SUFFIXES) and "__pycache__" not in f)


def metadata_version():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    return parser.get("general", "version")


def build(out_dir: Path) -> Path:
    files = tracked_files()
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{PLUGIN_NAME}-{metadata_version()}.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            zf.write(REPO / rel, f"{PLUGIN_NAME}/{rel}")
    return zip_path


def check(zip_path: Path) -> list:
    """Return a list of problems (empty when the zip is installable)."""
    problems = []
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        bad = zf.testzip()
        if bad:
            problems.append(f"corrupt member {bad}")
        tops = {n.split("/", 1)[0] for n in names}
        if tops != {PLUGIN_NAME}:
            problems.append(f"zip must hold exactly one top folder '{PLUGIN_NAME}', found {sorted(tops)}")
        for required in ["metadata.txt", "__init__.py", "LICENSE", DEFAULT_MODEL, "landform_plugin/plugin.py"]:
            if f"{PLUGIN_NAME}/{required}" not in names:
                problems.append(f"missing {required}")
        for n in names:
            rel = n.split("/", 1)[1] if "/" in n else n
            if rel.startswith(("tests/", "bench/", "tools/", ".")) or "/." in rel or "__pycache__" in rel:
                problems.append(f"development file in package: {rel}")
        if f"{PLUGIN_NAME}/metadata.txt" in names:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(zf.read(f"{PLUGIN_NAME}/metadata.txt").decode("utf-8"))
            for key in REQUIRED_METADATA:
                if not parser.get("general", key, fallback="").strip():
                    problems.append(f"metadata.txt lacks '{key}'")
            if parser.get("general", "hasProcessingProvider", fallback="") != "yes":
                problems.append("metadata.txt must say hasProcessingProvider=yes")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dist", help="output folder (default: dist)")
    args = parser.parse_args(argv)
    zip_path = build(REPO / args.out)
    problems = check(zip_path)
    size_mb = zip_path.stat().st_size / 1e6
    if problems:
        print(f"{zip_path}: {len(problems)} problem(s):", *problems, sep="\n  ", file=sys.stderr)
        return 1
    with zipfile.ZipFile(zip_path) as zf:
        count = len(zf.namelist())
    print(f"{zip_path} ({size_mb:.1f} MB, {count} files): OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
