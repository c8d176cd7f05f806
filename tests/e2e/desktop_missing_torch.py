"""Runs INSIDE the real QGIS desktop (``qgis --code desktop_missing_torch.py``) under Xvfb, without torch.

It does what a user without PyTorch does: runs "Classify Landforms from DEM",
which fails; the plugin's message bar then offers the installer. The script
saves a screenshot with the bar, clicks its Install button, and writes what it
found (the error, the bar's text and buttons, the dialog that opened) to a
JSON report that tests/e2e/test_desktop_dependencies.py asserts on.
"""
import importlib.util
import os
import sys

from qgis.core import QgsProcessingException
from qgis.PyQt.QtWidgets import QApplication, QPushButton
from qgis.utils import iface, plugins

sys.path.insert(0, os.environ["LANDFORM_DESKTOP_SCRIPTS"])
from desktop_script import DEM, OUT, run_session  # noqa: E402


def bar_items():
    return [{"title": item.title(), "text": item.text(),
             "buttons": [(b.objectName(), b.text()) for b in item.findChildren(QPushButton)]}
            for item in iface.messageBar().items()]


def run_classification():
    import processing

    report = {"plugin_loaded": "landform_classifier" in plugins,
              "torch_found": importlib.util.find_spec("torch") is not None}
    try:
        processing.run("landform:classifylandforms", {"INPUT": DEM, "OUTPUT": os.path.join(OUT, "classes.tif")})
        report["classify_error"] = None
    except QgsProcessingException as exc:
        report["classify_error"] = str(exc)
    report["classes_written"] = os.path.exists(os.path.join(OUT, "classes.tif"))
    QApplication.processEvents()
    report["bar"] = bar_items()
    return report


def click_install(report):
    buttons = [b for b in iface.messageBar().findChildren(QPushButton) if b.objectName() == "landformInstallDependencies"]
    report["install_buttons"] = len(buttons)
    if buttons:
        buttons[0].click()
        QApplication.processEvents()
    dialogs = [w for w in QApplication.topLevelWidgets() if w.objectName() == "landformInstallerDialog"]
    report["dialogs"] = [{"visible": d.isVisible(), "algorithm": d.algorithm().id()} for d in dialogs]
    if dialogs:
        dialogs[0].grab().save(os.path.join(OUT, "installer_dialog.png"))


def shoot(report):
    iface.mainWindow().grab().save(os.path.join(OUT, "message_bar.png"))
    click_install(report)


run_session(run_classification, shoot, 2000, exit_after_ms=1000)
