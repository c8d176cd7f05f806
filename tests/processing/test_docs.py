"""The README's algorithm reference is generated from the algorithms and must be current."""
import subprocess
import sys


def test_readme_algorithm_reference_is_current(repo_root):
    proc = subprocess.run([sys.executable, str(repo_root / "tools" / "algorithm_docs.py"), "--check"],
                          capture_output=True, text=True, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


def test_every_algorithm_has_help_group_icon_and_typed_parameters(landform_provider):
    for alg in landform_provider.algorithms():
        assert len(alg.shortHelpString()) > 200, alg.id()
        assert "Yang" in alg.shortHelpString(), alg.id()
        assert alg.group() and alg.groupId(), alg.id()
        assert not alg.icon().isNull(), alg.id()
        for p in alg.parameterDefinitions():
            assert p.description(), (alg.id(), p.name())
            assert p.name() == p.name().upper(), (alg.id(), p.name())
