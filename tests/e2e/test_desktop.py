"""The real QGIS desktop, under Xvfb, with the plugin installed from `make package`'s zip.

The classification runs with its results loaded; the test asserts on the
layers QGIS shows (paletted class layer with the four landform labels, styled
heatmaps) and keeps a screenshot in artifacts/desktop/desktop.png for review.
"""
import pytest

from .desktop import install_into_profile, run_desktop

pytestmark = pytest.mark.e2e


def test_desktop_classification_with_styled_layers(repo_root, dems, tmp_path):
    profile = install_into_profile(repo_root, tmp_path)
    out = repo_root / "artifacts" / "desktop"
    report = run_desktop("desktop_session.py", profile, dems["boulder"], out)
    assert report["plugin_loaded"] and report["toolbox_shown"]
    assert "landform:classifylandforms" in report["algorithms"]

    layers = report["layers"]
    classes = [l for l in layers if l["renderer"] == "paletted"]
    assert len(classes) == 1, layers
    labels = {value: label for value, label, _ in classes[0]["classes"]}
    assert [labels.get(v) for v in (1, 2, 3, 4)] == ["Plain", "Platform", "Hill", "Mountain"]
    colors = {c for _, _, c in classes[0]["classes"]}
    assert len(colors) == len(classes[0]["classes"])

    assert classes[0]["visible"]  # the landform map is what the user sees first
    heatmaps = [l for l in layers if l["renderer"] == "singlebandpseudocolor"]
    assert not any(h["visible"] for h in heatmaps)  # one tick away in the Layers panel
    assert len(heatmaps) >= 5, layers  # four classes + top-class confidence
    assert all(h["min"] == 0 and h["max"] == 1 for h in heatmaps)
    assert len({h["band"] for h in heatmaps}) == len(heatmaps)  # each heatmap its own band

    shot = out / "desktop.png"
    assert shot.stat().st_size > 50_000  # a rendered window, not a blank one
