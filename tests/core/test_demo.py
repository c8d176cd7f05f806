"""``make demo`` (core.demo) and the PNG preview (core.preview)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal

from landform_plugin.core import preview, rules


def _png_size(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_preview_of_rule_classes(dems, tmp_path):
    cls = str(tmp_path / "zion_rules.tif")
    rules.classify_raster(dems["zion"], cls)
    png = preview.render_preview(dems["zion"], cls, str(tmp_path / "p.png"), title="Zion")
    w, h = _png_size(png)
    assert w > 500 and h > 500
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    # the class colours are blended over a grey hillshade: the image is far from grey
    rgb = img[..., :3]
    assert np.mean(np.abs(rgb[..., 0] - rgb[..., 2])) > 0.05


def test_hillshade_lights_northwest_slopes():
    z = np.tile(np.arange(50, dtype=np.float32), (50, 1)) * -10.0  # falls to the east
    east = preview.hillshade(z, 30.0, 30.0)
    west = preview.hillshade(z[:, ::-1].copy(), 30.0, 30.0)
    assert np.nanmean(west) > np.nanmean(east)  # slopes facing west (toward a NW sun) are brighter


@pytest.mark.slow
def test_make_demo_command(repo_root, tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "landform_plugin.core", "demo", "--out", str(out), "--device", "cpu"],
                       cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "s per megapixel" in r.stdout
    name = "boulder_frontrange_srtmgl3"
    for suffix in ("_classes.tif", "_confidence.tif", "_rules.tif", "_preview.png"):
        assert (out / f"{name}{suffix}").is_file(), suffix
    dem = gdal.Open(str(repo_root / "resources" / "sample" / f"{name}.tif"))
    ds = gdal.Open(str(out / f"{name}_classes.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (dem.RasterXSize, dem.RasterYSize)
    assert ds.GetGeoTransform() == pytest.approx(dem.GetGeoTransform())
    cls = ds.GetRasterBand(1).ReadAsArray()
    assert set(np.unique(cls)) <= {0, 1, 2, 3, 4}
    # The Front Range sample is mostly mountain, with plains/platforms/hills at its eastern edge.
    assert np.mean(cls == 4) > 0.5
    conf = gdal.Open(str(out / f"{name}_confidence.tif"))
    assert conf.RasterCount == 6
    w, h = _png_size(out / f"{name}_preview.png")
    assert w >= 1500 and h >= 600
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_seconds_per_megapixel"] > 0
    assert abs(sum(summary["model_class_shares_percent"].values()) - 100) < 0.5


def test_demo_without_model_says_how_to_get_it(tmp_path, repo_root):
    from landform_plugin.core import demo
    from landform_plugin.core.errors import LandformError

    with pytest.raises(LandformError, match="train_default_model"):
        demo.run_demo(str(tmp_path / "x"), model=str(tmp_path / "missing.safetensors"))
    assert not (tmp_path / "x").exists()
