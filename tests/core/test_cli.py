"""The command line works on a machine with torch and numpy but without GDAL or QGIS."""
import subprocess
import sys


def _run(repo_root, code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root, timeout=300)


def test_train_command_without_gdal_or_qgis(repo_root):
    code = (
        "import sys; sys.modules['osgeo'] = None; sys.modules['qgis'] = None;"
        "from landform_plugin.core.__main__ import build_parser;"
        "p = build_parser(); print(p.epilog);"
        "p.parse_args(['train', '--help'])"
    )
    out = _run(repo_root, code)
    assert out.returncode == 0, out.stderr
    assert "--chips" in out.stdout
    # commands that need GDAL say so instead of breaking the whole command line
    assert "Not available on this machine" in out.stdout and "'demo' (needs GDAL" in out.stdout


def test_all_commands_listed_with_gdal(repo_root):
    out = _run(repo_root, "from landform_plugin.core.__main__ import main; main(['--help'])")
    for command in ("demo", "terrain", "classify", "rules", "chips", "train", "evaluate"):
        assert command in out.stdout, out.stdout + out.stderr
