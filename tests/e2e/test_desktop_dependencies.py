"""The QGIS desktop without PyTorch, under Xvfb: a deep-learning algorithm fails and the message bar offers the installer.

The plugin is installed from `make package`'s zip into a fresh profile, and
QGIS runs with the system Python only (the venv off PATH), as a user's QGIS
does before PyTorch is installed. Screenshots are kept in
artifacts/desktop_dependencies/ (docs/desktop_install_dependencies.png is one).
"""
import pytest

from landform_plugin.dependencies import TorchMissingBar

from .desktop import install_into_profile, run_desktop

pytestmark = pytest.mark.e2e


def test_message_bar_offers_the_installer_when_torch_is_missing(repo_root, dems, tmp_path):
    profile = install_into_profile(repo_root, tmp_path)
    out = repo_root / "artifacts" / "desktop_dependencies"
    report = run_desktop("desktop_missing_torch.py", profile, dems["boulder"], out, venv=False)
    assert report["plugin_loaded"] and report["torch_found"] is False
    assert report["classify_error"] is not None and not report["classes_written"]

    ours = [i for i in report["bar"] if i["title"] == "Landform classifier"]
    assert len(ours) == 1, report["bar"]
    assert ours[0]["text"] == TorchMissingBar.TEXT
    assert ours[0]["buttons"] == [["landformInstallDependencies", "Install PyTorch…"]]
    assert report["install_buttons"] == 1
    assert report["dialogs"] == [{"visible": True, "algorithm": "landform:installdependencies"}]
    assert (out / "message_bar.png").stat().st_size > 50_000
    assert (out / "installer_dialog.png").stat().st_size > 10_000
