"""Shared by the scripts that run INSIDE the real QGIS desktop (``qgis --code``, started by
desktop.run_desktop): the paths the test chose, and the session's course: the window is
maximised, the work runs once it is up, then screenshots are taken, the JSON report the
test asserts on is written and QGIS exits. An exception goes into the report as "error"."""
import json
import os
import traceback

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

DEM = os.environ["LANDFORM_DESKTOP_DEM"]
OUT = os.environ["LANDFORM_DESKTOP_OUT"]


def run_session(work, shoot, shoot_after_ms: int, exit_after_ms: int = 0) -> None:
    """``work()`` 2 s after the window is shown returns the report; ``shoot(report)`` runs
    ``shoot_after_ms`` later (screenshots, clicks), then OUT/report.json is written and QGIS
    exits ``exit_after_ms`` after that."""

    def finish():
        report = {}
        try:
            report = work()
        except Exception:  # the test reads the traceback from the report
            report["error"] = traceback.format_exc()

        def shoot_and_exit():
            try:
                shoot(report)
            except Exception:
                report["error"] = traceback.format_exc()
            with open(os.path.join(OUT, "report.json"), "w") as f:
                json.dump(report, f, indent=1)
            if exit_after_ms:
                QTimer.singleShot(exit_after_ms, lambda: QgsApplication.exit(0))
            else:
                QgsApplication.exit(0)

        QTimer.singleShot(shoot_after_ms, shoot_and_exit)

    iface.mainWindow().showMaximized()
    QTimer.singleShot(2000, finish)
