"""QGIS side of the dependency installer: the profile folder, sys.path at load, the message bar.

The work itself is in ``core.deps`` and ``core.pip_install`` (no QGIS there).
Nothing here imports torch: ``importlib.util.find_spec`` answers "is it there?"
without the ~3 s and ~800 MB an import costs.
"""
import urllib.parse

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsSettings
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .core import deps

TAG = "Landform classifier"
INSTALLER_ID = "landform:installdependencies"
_state = {"notifier": None}


def profile_dir() -> str:
    """The active QGIS profile folder (QGIS_CUSTOM_CONFIG_PATH and --profile included)."""
    return QgsApplication.qgisSettingsDirPath()


def activate_at_load():
    """Put the plugin's dependency folder on sys.path; called when QGIS loads the plugin, before any torch import."""
    try:
        activation = deps.activate(profile_dir())
    except OSError as exc:  # an unreadable profile must not keep the plugin from loading
        QgsMessageLog.logMessage(f"Dependency folder not used: {exc}", TAG, Qgis.Warning)
        return deps.Activation()
    for notice in activation.notices:
        QgsMessageLog.logMessage(notice, TAG, Qgis.Warning)
    return activation


def proxy_url():
    """QGIS's HTTP proxy (Settings > Options > Network) as a URL for pip, or None."""
    s = QgsSettings()
    enabled = str(s.value("proxy/proxyEnabled", False)).lower() in ("true", "1")
    kind = str(s.value("proxy/proxyType", ""))
    host = str(s.value("proxy/proxyHost", "") or "")
    if not enabled or not host or kind not in ("HttpProxy", "HttpCachingProxy", "DefaultProxy"):
        return None
    port = str(s.value("proxy/proxyPort", "") or "")
    user = str(s.value("proxy/proxyUser", "") or "")
    password = str(s.value("proxy/proxyPassword", "") or "")
    auth = f"{urllib.parse.quote(user)}:{urllib.parse.quote(password)}@" if user else ""
    return f"http://{auth}{host}" + (f":{port}" if port else "")


class _Notifier(QObject):
    """Carries "torch is missing" from an algorithm (any thread) to the GUI thread."""

    torch_missing = pyqtSignal(str)


def notifier() -> _Notifier:
    if _state["notifier"] is None:
        _state["notifier"] = _Notifier()
    return _state["notifier"]


def report_missing_torch(algorithm_id: str, message: str = "") -> None:
    """Called by an algorithm that found a package missing; the desktop shows the message bar if it is torch."""
    if _state["notifier"] is not None and "torch" in message.lower():
        _state["notifier"].torch_missing.emit(algorithm_id)


class TorchMissingBar:
    """The desktop's message bar "PyTorch is not installed" with an Install button (algorithms show no dialogs)."""

    TEXT = "PyTorch is missing: the deep-learning algorithms need it."

    def __init__(self, iface):
        self.iface = iface
        self.item = None
        notifier().torch_missing.connect(self.show)

    def show(self, algorithm_id=""):
        from qgis.PyQt.QtWidgets import QPushButton

        bar = self.iface.messageBar()
        if self.item is not None and self.item in bar.items():
            return
        item = bar.createMessage("Landform classifier", self.TEXT)
        button = QPushButton("Install PyTorch…", item)
        button.setObjectName("landformInstallDependencies")
        button.clicked.connect(self.open_installer)
        item.layout().addWidget(button)
        self.item = bar.pushWidget(item, Qgis.Warning)

    def open_installer(self):
        """Open the installer's Processing dialog; the user chooses the variant and clicks Run."""
        import processing

        dialog = processing.createAlgorithmDialog(INSTALLER_ID, {})
        if dialog is not None:
            dialog.setObjectName("landformInstallerDialog")
            dialog.show()
            self.dialog = dialog  # keep it alive

    def unload(self):
        try:
            notifier().torch_missing.disconnect(self.show)
        except TypeError:
            pass
        if self.item is not None:
            try:
                self.iface.messageBar().popWidget(self.item)
            except RuntimeError:
                pass
            self.item = None
