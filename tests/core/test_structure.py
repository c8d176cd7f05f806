"""The shape of the code: dependencies run one way, no import cycle, short functions.

Each core module is imported alone in a fresh interpreter and what it pulls in is
checked: training must run on a GPU box without GDAL or QGIS, the chip set and the
output helpers need only numpy, and nothing low imports something high."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "landform_plugin"

# module -> what importing it alone must not load
MUST_NOT_LOAD = {
    "errors": ["osgeo", "torch", "landform_plugin.core.rasters"],
    "outputs": ["osgeo", "torch", "landform_plugin.core.rasters"],
    "chipset": ["osgeo", "torch", "scipy", "landform_plugin.core.chips", "landform_plugin.core.train",
                "landform_plugin.core.predict"],
    "devices": ["osgeo", "landform_plugin.core.predict", "landform_plugin.core.train"],
    "metrics": ["osgeo", "torch"],
    "modelfile": ["osgeo", "torch", "landform_plugin.core.predict"],
    "train": ["osgeo", "qgis", "scipy", "landform_plugin.core.chips", "landform_plugin.core.layers",
              "landform_plugin.core.rasters", "landform_plugin.core.predict"],
    "rasters": ["torch", "landform_plugin.core.terrain", "landform_plugin.core.chips", "landform_plugin.core.predict"],
    "layers": ["torch", "landform_plugin.core.chips", "landform_plugin.core.evaluate", "landform_plugin.core.train",
               "landform_plugin.core.predict"],
    "chips": ["landform_plugin.core.train", "landform_plugin.core.predict", "landform_plugin.core.evaluate"],
    "evaluate": ["torch", "landform_plugin.core.chips", "landform_plugin.core.train", "landform_plugin.core.predict"],
    "terrain": ["torch", "landform_plugin.core.predict", "landform_plugin.core.chips"],
    "rules": ["torch", "landform_plugin.core.predict", "landform_plugin.core.chips"],
    "nets.registry": ["torch"],
    "tiling": ["osgeo", "torch"],
    "grid": ["torch", "landform_plugin.core.predict", "landform_plugin.core.blocks"],
    "blocks": ["torch", "distributed", "landform_plugin.core.predict", "landform_plugin.core.terrain"],
    "block_jobs": ["torch", "distributed", "landform_plugin.core.predict"],
    "predict": ["torch", "distributed", "landform_plugin.core.chips", "landform_plugin.core.train"],
    "nets.unet": ["landform_plugin.core.nets.attention_unet"],
}

# No exceptions: the limit holds for every function.
KNOWN_LONG: set = set()
MAX_LINES = 80


@pytest.mark.parametrize("module", sorted(MUST_NOT_LOAD))
def test_a_module_alone_pulls_in_only_what_it_needs(module):
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module('landform_plugin.core.{module}')\n"
        "print(json.dumps(sorted(m for m in sys.modules if sys.modules[m] is not None)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(PKG.parent), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.splitlines()[-1])
    wrong = [m for m in MUST_NOT_LOAD[module] if any(x == m or x.startswith(m + ".") for x in loaded)]
    assert not wrong, f"importing core.{module} loads {wrong}"


def _module_imports(path: Path):
    """landform_plugin modules imported at module level (not inside functions) by ``path``."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("landform_plugin")}


def test_no_import_cycle():
    files = {".".join(p.relative_to(PKG.parent).with_suffix("").parts): p for p in PKG.rglob("*.py")}
    files = {k[: -len(".__init__")] if k.endswith(".__init__") else k: v for k, v in files.items()}
    graph = {m: {i for i in _module_imports(p) if i in files and i != m} for m, p in files.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n] if n in stack else [m, n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_unet_and_attention_unet_are_not_a_pair():
    assert "landform_plugin.core.nets.attention_unet" not in _module_imports(PKG / "core" / "nets" / "unet.py")


def test_no_function_over_80_lines():
    long = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                where = f"{path.relative_to(PKG).as_posix()}:{node.name}"
                if n > MAX_LINES and where not in KNOWN_LONG:
                    long.append(f"{where} ({n} lines)")
    assert not long, long


OUTSIDE = ("../shared", "shared/GUIDE", '"..", "shared"', '"shared", "data"')


def test_nothing_shipped_points_outside_the_repository():
    """A user's clone has only the repository: no code, bench or doc may reach for a sibling folder."""
    root = PKG.parent
    paths = [p for d in ("landform_plugin", "bench", "tools", "tests") for p in (root / d).rglob("*.py")]
    paths += [root / "README.md", root / "models" / "README.md"]
    bad = []
    for path in paths:
        if path == Path(__file__).resolve():
            continue
        rel = path.relative_to(root).as_posix()
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if any(s in line for s in OUTSIDE):
                bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, bad


def test_the_algorithms_load_without_torch_or_scipy():
    """The provider must list its algorithms in a QGIS whose Python lacks torch or scipy
    (they are needed only when an algorithm that uses them runs)."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['scipy'] = None\n"
        "from landform_plugin.processing.algorithms import algorithm_classes\n"
        "print(len([cls() for cls in algorithm_classes()]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(PKG.parent), timeout=120,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "6"
