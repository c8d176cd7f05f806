"""Run ``qgis_process.bin`` against the plugin, enabled in an isolated QGIS profile.

The repository root is the plugin folder; QGIS finds plugins by folder name,
so a temporary plugin directory holds a ``landform_classifier`` link to it.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGIN_NAME = "landform_classifier"


def qgis_process_binary():
    exe = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    assert os.path.exists(exe), "qgis_process.bin not found: run `make setup`"
    return exe


class QgisProcess:
    """A qgis_process with its own profile and plugin path."""

    def __init__(self, root: Path, plugin_source: Path = REPO):
        self.root = root
        self.plugins = root / "plugins"
        self.profile = root / "profile"
        self.plugins.mkdir(parents=True, exist_ok=True)
        self.profile.mkdir(parents=True, exist_ok=True)
        link = self.plugins / PLUGIN_NAME
        if not link.exists():
            link.symlink_to(plugin_source, target_is_directory=True)
        venv_bin = str(Path(sys.executable).parent)
        self.env = dict(os.environ)
        self.env.update(
            QT_QPA_PLATFORM="offscreen",
            QGIS_PLUGINPATH=str(self.plugins),
            QGIS_CUSTOM_CONFIG_PATH=str(self.profile),
            # QGIS embeds the system Python; the venv's torch is seen with its bin first on PATH.
            PATH=venv_bin + os.pathsep + self.env.get("PATH", ""),
        )
        self.env.pop("PYTHONPATH", None)

    def __call__(self, *args, timeout=600, check=True):
        proc = subprocess.run(
            [qgis_process_binary(), *map(str, args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"qgis_process {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc

    def json(self, *args, timeout=600):
        proc = self("--json", *args, timeout=timeout)
        start = proc.stdout.find("{")
        return json.loads(proc.stdout[start:])

    def enable(self):
        return self("plugins", "enable", PLUGIN_NAME)


