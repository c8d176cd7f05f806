"""Blocks as the unit of work, in this process: block-exact results, resume after a kill, failures.

The tiny relief model (tests/data/models) on real DEMs; tiles of 256 cells so that a run has many
tiles and blocks.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from osgeo import gdal

import torch  # noqa: F401  (installed by make setup; a missing torch must fail, not skip)

from landform_plugin.core import blocks
from landform_plugin.core.errors import Cancelled, LandformError
from landform_plugin.core.predict import classify_raster
from landform_plugin.core.progress import Progress

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "tests", "data", "models", "tiny_relief_60m.safetensors")


def read(path):
    return gdal.Open(path).ReadAsArray()


def run(dem, out_dir, name, **kw):
    c, p = str(out_dir / f"{name}.tif"), str(out_dir / f"{name}_p.tif")
    kw.setdefault("tile_size", 256)
    s = classify_raster(dem, TINY, c, p, device="cpu", **kw)
    return s, read(c), read(p)


@pytest.mark.parametrize("name,px", [("bigtujunga", 30.0), ("bigtujunga", None), ("boulder", None)])
def test_block_size_changes_no_cell(dems, tmp_path, name, px):
    """Same-grid (30 m UTM at 30 m), resampled projected (30 m at 60 m) and geographic (3 arcsec -> UTM):
    the classes and probabilities do not depend on how the lattice is cut into blocks."""
    ref_s, ref_c, ref_p = run(dems[name], tmp_path, "ref", pixel_size_m=px)
    assert ref_s["resampled"] == (px is None)
    for size in (512, 2048):
        s, c, p = run(dems[name], tmp_path, f"b{size}", pixel_size_m=px, block_size=size)
        assert s["blocks"] > ref_s["blocks"] or size == 2048
        assert (c == ref_c).all(), f"block size {size}: {(c != ref_c).sum()} cells differ"
        assert np.abs(p - ref_p).max() <= 1e-5
    assert ref_s["tiles"] > 4 and (ref_c[ref_c > 0] >= 1).all()
    assert not any(n.endswith(".landform-run") for n in os.listdir(tmp_path))  # run folders removed


@pytest.mark.parametrize("share", [blocks.RAW_SHARE_OF_FREE, 0.0])
def test_block_files_compressed_only_when_the_disk_is_short(dems, tmp_path, monkeypatch, share):
    """A run in this process writes its block files uncompressed when they fit in a share of the free
    disk space, ZSTD otherwise (share 0 here): the blocks seen on disk during the run say which, the
    log says so, and the outputs are identical either way."""
    monkeypatch.setattr(blocks, "RAW_SHARE_OF_FREE", share)
    seen, log = set(), []
    c, p = tmp_path / "c.tif", tmp_path / "p.tif"
    run_dir = blocks.run_folder_for(str(c))

    def look(_percent):
        for root, _, files in os.walk(run_dir):
            for f in files:
                if f.endswith(".tif") and ".partial" not in f:
                    ds = gdal.Open(os.path.join(root, f))
                    seen.add(ds.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") or "NONE")

    classify_raster(dems["bigtujunga"], TINY, str(c), str(p), tile_size=256, pixel_size_m=30, block_size=512,
                    device="cpu", progress=Progress(set_progress=look, log=log.append))
    assert seen == ({"NONE"} if share else {"ZSTD"})
    assert any("uncompressed" in m for m in log) == bool(share)
    ref_c, ref_p = tmp_path / "ref.tif", tmp_path / "ref_p.tif"
    monkeypatch.setattr(blocks, "RAW_SHARE_OF_FREE", 0.0 if share else blocks.RAW_SHARE_OF_FREE)
    classify_raster(dems["bigtujunga"], TINY, str(ref_c), str(ref_p), tile_size=256, pixel_size_m=30,
                    block_size=512, device="cpu")
    assert (read(str(c)) == read(str(ref_c))).all() and (read(str(p)) == read(str(ref_p))).all()
    out = gdal.Open(str(p))  # the outputs themselves are compressed either way
    assert out.GetMetadataItem("COMPRESSION", "IMAGE_STRUCTURE") == "ZSTD"


def test_raw_blocks_fit_compares_with_the_free_space(tmp_path):
    free = __import__("shutil").disk_usage(tmp_path).free
    assert blocks.raw_blocks_fit(str(tmp_path / "not" / "made" / "yet"), 1000)
    assert not blocks.raw_blocks_fit(str(tmp_path), int(free * blocks.RAW_SHARE_OF_FREE) + 10**9)


def test_strips_end_on_the_block_files_tile_rows():
    from landform_plugin.core.predict import FINALISE_ROWS, strips

    for y, h in ((0, 2048), (100, 1000), (256, 300), (0, 7), (1000, 1)):
        parts = strips(y, h)
        assert parts[0][0] == 0 and parts[-1][1] == h
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))  # contiguous, in order
        assert all(0 < r1 - r0 <= FINALISE_ROWS for r0, r1 in parts)
        assert all((y + r1) % blocks.BLOCK_TILE == 0 for _, r1 in parts[:-1])  # whole tile rows


def test_cancel_removes_the_run_folder_even_when_failed_runs_keep_theirs(dems, tmp_path):
    calls = []

    def cancel_late():
        calls.append(1)
        return len(calls) > 6

    c = str(tmp_path / "c.tif")
    with pytest.raises(Cancelled):
        classify_raster(dems["bigtujunga"], TINY, c, None, tile_size=256, pixel_size_m=30, block_size=512,
                        device="cpu", progress=Progress(is_cancelled=cancel_late), keep_run_on_error=True)
    assert not os.path.exists(c)
    # a cancel is the user's decision: the run folder goes too (only a failure or a kill keeps blocks)
    assert os.listdir(tmp_path) == []


def _cli(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", "landform_plugin.core", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_run_resumes_from_its_finished_blocks(dems, tmp_path):
    """The command line killed (SIGKILL) after some blocks continues when run again: the finished
    blocks are reused (not recomputed) and the output equals an uninterrupted run."""
    args = ["classify", dems["bigtujunga"], TINY, str(tmp_path / "c.tif"), "--confidence", str(tmp_path / "p.tif"),
            "--tile-size", "256", "--pixel-size", "30", "--block-size", "256", "--device", "cpu"]
    run_dir = blocks.run_folder_for(str(tmp_path / "c.tif"))
    proc = _cli(*args)
    deadline = time.monotonic() + 300
    done = []
    while time.monotonic() < deadline and proc.poll() is None:
        done = [n for n in os.listdir(run_dir) if n.endswith(".done.json")] if os.path.isdir(run_dir) else []
        if len(done) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "c.tif").exists()
    kept = {n: os.stat(os.path.join(run_dir, n)).st_mtime_ns for n in os.listdir(run_dir) if n.endswith(".done.json")}
    assert len(kept) >= 3
    again = _cli(*args)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert f"Reusing {len(kept)} finished block(s)" in out
    assert not os.path.exists(run_dir)
    ref = str(tmp_path / "ref.tif")
    classify_raster(dems["bigtujunga"], TINY, ref, str(tmp_path / "ref_p.tif"), tile_size=256, pixel_size_m=30,
                    block_size=256, device="cpu")
    assert (read(str(tmp_path / "c.tif")) == read(ref)).all()
    assert np.abs(read(str(tmp_path / "p.tif")) - read(str(tmp_path / "ref_p.tif"))).max() <= 1e-5


def test_run_folder_of_another_command_is_not_reused(tmp_path):
    folder = str(tmp_path / "run")
    rf = blocks.RunFolder(folder, "aaaa", Progress())
    with open(os.path.join(folder, "x.done.json"), "w") as f:
        json.dump({"counts": [1]}, f)
    assert rf.done("x") == {"counts": [1]}
    msgs = []
    rf2 = blocks.RunFolder(folder, "bbbb", Progress(log=msgs.append))
    assert rf2.done("x") is None and "another command" in msgs[0]


def test_a_corrupt_tile_of_a_mosaic_fails_the_run_and_writes_nothing(dems, tmp_path):
    """Four tiles of a real DEM, one truncated: the run stops with the block's error naming the file."""
    tiles = _cut_tiles(dems["bigtujunga"], tmp_path, 2, 2)
    data = open(tiles[3], "rb").read()
    with open(tiles[3], "wb") as f:
        f.write(data[: len(data) // 3])
    c = str(tmp_path / "c.tif")
    with pytest.raises(LandformError) as err:
        classify_raster(tiles, TINY, c, None, tile_size=256, pixel_size_m=30, device="cpu")
    assert "tile_1_1" in str(err.value) or "mosaic" in str(err.value)
    assert not os.path.exists(c)
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith("tile_")) == []


def _cut_tiles(dem, folder, nx, ny):
    ds = gdal.Open(dem)
    w, h = ds.RasterXSize, ds.RasterYSize
    out = []
    for j in range(ny):
        for i in range(nx):
            x0, y0 = i * w // nx, j * h // ny
            x1, y1 = (i + 1) * w // nx, (j + 1) * h // ny
            p = str(folder / f"tile_{j}_{i}.tif")
            gdal.Translate(p, ds, srcWin=[x0, y0, x1 - x0, y1 - y0])
            out.append(p)
    return out


def test_mosaic_of_tiles_equals_the_whole_dem(dems, tmp_path):
    """Several DEM files (and a text file listing them) are classified as one mosaic: the same
    classes as the DEM they were cut from, on the same grid."""
    tiles = _cut_tiles(dems["bigtujunga"], tmp_path, 3, 2)
    listing = tmp_path / "tiles.txt"
    listing.write_text("\n".join(os.path.basename(t) for t in tiles) + "\n")
    _, ref_c, ref_p = run(dems["bigtujunga"], tmp_path, "whole", pixel_size_m=30)
    for src in (tiles, [str(listing)]):
        s, c, p = run(src, tmp_path, "mosaic", pixel_size_m=30)
        assert (c == ref_c).all() and np.abs(p - ref_p).max() <= 1e-5
        out = gdal.Open(str(tmp_path / "mosaic.tif"))
        assert out.GetGeoTransform() == gdal.Open(dems["bigtujunga"]).GetGeoTransform()
