"""How the plugin imports torch inside QGIS (see core.errors.import_torch)."""
import subprocess
import sys


def test_import_torch_inside_qgis_keeps_triton_out(repo_root):
    code = (
        "import sys; sys.path.insert(0, %r); import qgis.core;"
        "from landform_plugin.core.errors import import_torch; torch = import_torch();"
        "x = torch.nn.Conv2d(1, 2, 3)(torch.ones(1, 1, 8, 8));"
        "print(tuple(x.shape), sys.modules.get('triton', 'absent'))"
    ) % str(repo_root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "None" and "(1, 2, 6, 6)" in out.stdout


def test_missing_torch_gives_install_instructions(repo_root):
    code = (
        "import sys; sys.path.insert(0, %r); sys.modules['torch'] = None;"
        "from landform_plugin.core.errors import import_torch, MissingDependency\n"
        "try:\n    import_torch()\nexcept MissingDependency as e:\n    print(e)"
    ) % str(repo_root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "needs PyTorch and torchvision" in out.stdout and "pip install" in out.stdout
