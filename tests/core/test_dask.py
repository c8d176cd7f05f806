"""Classification on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, started by the tests and stopped by their process ids (tests/dask_cluster.py).

The DEM is a mosaic of real data: the bundled Boulder SRTM tile (EPSG:4326) cut into four files.
"""
import os
import signal
import threading
import time

import numpy as np
import pytest
from osgeo import gdal

import torch  # noqa: F401  (installed by make setup; a missing torch must fail, not skip)

from landform_plugin.core import blocks
from landform_plugin.core.errors import LandformError
from landform_plugin.core.predict import classify_raster
from tests.dask_cluster import LocalDaskCluster
from tests.hostile import mismatched_factors_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "data", "models", "tiny_relief_60m.safetensors")
KW = dict(tile_size=256, device="cpu")

pytestmark = pytest.mark.slow


def read(path):
    return gdal.Open(path).ReadAsArray()


@pytest.fixture(scope="module")
def mosaic(dems, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mosaic")
    ds = gdal.Open(dems["boulder"])
    w, h = ds.RasterXSize, ds.RasterYSize
    tiles = []
    for j in range(2):
        for i in range(2):
            p = str(folder / f"tile_{j}{i}.tif")
            gdal.Translate(p, ds, srcWin=[i * w // 2, j * h // 2, w // 2, h // 2])
            tiles.append(p)
    return tiles


@pytest.fixture(scope="module")
def single_process(mosaic, tmp_path_factory):
    d = tmp_path_factory.mktemp("single")
    s = classify_raster(mosaic, TINY, str(d / "c.tif"), str(d / "p.tif"), **KW)
    return s, read(str(d / "c.tif")), read(str(d / "p.tif"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalDaskCluster(tmp_path_factory.mktemp("dask"), workers=2) as c:
        yield c


@pytest.mark.parametrize("block_size, reuse_memory", [(512, False), (2048, True)])
def test_cluster_equals_single_process(mosaic, single_process, cluster, tmp_path, block_size, reuse_memory):
    """Blocks on two workers give the single process's outputs; the reuse-memory option travels to
    the workers and changes nothing either."""
    s0, c0, p0 = single_process
    c, p = str(tmp_path / "c.tif"), str(tmp_path / "p.tif")
    msgs = []
    from landform_plugin.core.progress import Progress

    s = classify_raster(mosaic, TINY, c, p, block_size=block_size, engine=blocks.DaskEngine(cluster.address),
                        progress=Progress(log=msgs.append), reuse_memory=reuse_memory, **KW)
    assert any("Dask cluster tcp://127.0.0.1:" in m and "2 workers" in m for m in msgs), msgs
    assert s["blocks"] >= (4 if block_size == 512 else 2)
    assert (read(c) == c0).all(), f"{(read(c) != c0).sum()} cells differ"
    assert np.abs(read(p) - p0).max() <= 1e-5
    assert gdal.Open(c).GetGeoTransform() == gdal.BuildVRT("", mosaic).GetGeoTransform()
    assert set(np.unique(c0)) >= {1, 3, 4}


def test_worker_killed_mid_block_is_replaced_by_a_retry(mosaic, single_process, tmp_path):
    """One worker is killed (SIGKILL, by its process id) while it computes a block: Dask reschedules
    the block on the other worker and the output is identical."""
    s0, c0, p0 = single_process
    with LocalDaskCluster(tmp_path / "cluster", workers=2) as cl:
        pids = cl.worker_pids()
        killed = {}

        def killer():
            from distributed import Client

            with Client(cl.address, timeout=30) as c:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and not killed:
                    some_done = os.path.isdir(run_dir) and any(n.endswith(".done.json") for n in os.listdir(run_dir))
                    busy = [w for w, keys in c.processing().items() if any("landform-" in str(k) for k in keys)]
                    if some_done and busy:  # mid-run, and this worker is computing a block right now
                        os.kill(pids[busy[0]], signal.SIGKILL)
                        killed[busy[0]] = pids[busy[0]]
                    time.sleep(0.05)

        out = str(tmp_path / "c.tif")
        run_dir = blocks.run_folder_for(out)
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        classify_raster(mosaic, TINY, out, str(tmp_path / "p.tif"), block_size=256,
                        engine=blocks.DaskEngine(cl.address), **KW)
        t.join(timeout=30)
        assert killed, "no worker was killed while computing a block"
        assert (read(out) == c0).all()
        assert np.abs(read(str(tmp_path / "p.tif")) - p0).max() <= 1e-5


def test_a_failing_block_fails_the_run_with_its_error(mosaic, cluster, tmp_path):
    """A model file whose header is valid but whose tensors do not fit it is only loaded on the
    workers: the blocks fail there, and the run stops with the block's error and writes nothing."""
    model = mismatched_factors_model(tmp_path / "mismatched.safetensors", 60.0, 256)
    c = str(tmp_path / "c.tif")
    with pytest.raises(LandformError) as err:
        classify_raster(mosaic, model, c, str(tmp_path / "p.tif"), block_size=256,
                        engine=blocks.DaskEngine(cluster.address), **KW)
    assert "Block z0_" in str(err.value) and "does not match its declared architecture" in str(err.value)
    assert not os.path.exists(c) and not os.path.exists(str(tmp_path / "p.tif"))
    assert not os.path.exists(blocks.run_folder_for(c))


def test_local_cluster_from_the_command_line(mosaic, single_process, tmp_path):
    """``--local-workers 2`` starts an in-process cluster for the run (127.0.0.1 only) and stops it."""
    import subprocess
    import sys

    s0, c0, p0 = single_process
    listing = tmp_path / "tiles.txt"
    listing.write_text("\n".join(mosaic) + "\n")
    out = str(tmp_path / "c.tif")
    r = subprocess.run([sys.executable, "-m", "landform_plugin.core", "classify", str(listing), TINY, out,
                        "--tile-size", "256", "--device", "cpu", "--local-workers", "2", "--block-size", "512"],
                       cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Dask cluster tcp://127.0.0.1:" in r.stdout and "dashboard" in r.stdout
    assert (read(out) == c0).all()


def test_terrain_factors_and_rules_on_the_cluster_equal_one_process(dems, cluster, tmp_path):
    """The cheap algorithms run through the same block runner: a national RDLS or rule map is one command."""
    from landform_plugin.core import block_jobs, rules, terrain

    dem = dems["bigtujunga"]
    names = ("slope", "hillshade", "rdls", "plan_curvature")
    ref = {n: str(tmp_path / f"ref_{n}.tif") for n in names}
    terrain.derive_terrain_factors(dem, ref)
    out = {n: str(tmp_path / f"{n}.tif") for n in names}
    block_jobs.terrain_factors(dem, out, blocks.DaskEngine(cluster.address), block_size=256)
    for n in names:
        a, b = read(out[n]), read(ref[n])
        assert a.shape == b.shape and np.array_equal(a, b), n
        assert gdal.Open(out[n]).GetGeoTransform() == gdal.Open(dem).GetGeoTransform()
    rules.classify_raster(dem, str(tmp_path / "ref_rules.tif"))
    shares = block_jobs.rule_classes(dem, str(tmp_path / "rules.tif"), blocks.DaskEngine(cluster.address), block_size=300)
    assert np.array_equal(read(str(tmp_path / "rules.tif")), read(str(tmp_path / "ref_rules.tif")))
    assert shares["Mountain"] > 50
    # (gdal.Info: this GDAL's Python GetCategoryNames answers None unless gdal.UseExceptions() is on)
    assert gdal.Info(str(tmp_path / "rules.tif"), format="json")["bands"][0]["categories"][1] == "Plain"
