"""OutputSet: every output of a run committed together or none; output locations checked first."""
import os

import numpy as np
import pytest

from landform_plugin.core import rasters
from landform_plugin.core.errors import Cancelled, LandformError
from landform_plugin.core.outputs import OutputSet, check_output_path

from ..geotiff import write_geotiff


def _listing(folder):
    return sorted(os.listdir(folder))


def test_all_outputs_appear_together_on_success(tmp_path):
    info = rasters.open_raster(write_geotiff(tmp_path / "in.tif", np.ones((4, 5), dtype=np.float32)))[1]
    with OutputSet(inputs=[info.path]) as out:
        w = rasters.GeoTiffWriter(str(tmp_path / "a.tif"), info, outputs=out, nodata=-1, band_names=["a"])
        w.write(np.full((4, 5), 2, dtype=np.float32), 0, 0)
        with open(out.file(str(tmp_path / "b.csv")), "w") as fh:
            fh.write("x\n")
        assert _listing(tmp_path) != ["a.tif", "b.csv", "in.tif"]  # nothing final before the end
    assert _listing(tmp_path) == ["a.tif", "b.csv", "in.tif"]
    assert rasters.read_array(str(tmp_path / "a.tif")).tolist() == np.full((4, 5), 2).tolist()


@pytest.mark.parametrize("failure", [LandformError("bad"), Cancelled("user"), OSError(28, "No space left on device")],
                         ids=["error", "cancel", "disk-full"])
def test_a_failure_keeps_none_and_the_old_outputs(failure, tmp_path):
    old = tmp_path / "b.csv"
    old.write_text("old\n")
    with pytest.raises((LandformError, Cancelled)):
        with OutputSet() as out:
            with open(out.file(str(tmp_path / "a.csv")), "w") as fh:
                fh.write("new\n")
            with open(out.file(str(old)), "w") as fh:
                fh.write("new\n")
            raise failure
    assert _listing(tmp_path) == ["b.csv"] and old.read_text() == "old\n"


def test_a_failed_rename_takes_back_the_renamed_ones(tmp_path):
    out = OutputSet()
    with open(out.file(str(tmp_path / "a.csv")), "w") as fh:
        fh.write("a\n")
    out.file(str(tmp_path / "b.csv"))  # never written: its rename fails
    with pytest.raises(LandformError, match="b.csv"):
        out.commit()
    assert _listing(tmp_path) == []


def test_folders_replace_their_old_contents(tmp_path):
    (tmp_path / "chips").mkdir()
    (tmp_path / "chips" / "stale.npy").write_text("x")
    with OutputSet() as out:
        d = out.folder(str(tmp_path / "chips"))
        open(os.path.join(d, "new.npy"), "w").close()
    assert _listing(tmp_path / "chips") == ["new.npy"]


def test_check_output_path(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LandformError, match="is a file, not a folder"):
        check_output_path(str(tmp_path / "file" / "deeper" / "out.tif"))
    with pytest.raises(LandformError, match="is also an input"):
        check_output_path(str(tmp_path / "file"), inputs=[str(tmp_path / "file")])
    with pytest.raises(LandformError, match="is a folder"):
        check_output_path(str(tmp_path))
    with pytest.raises(LandformError, match="is a file; choose a folder"):
        check_output_path(str(tmp_path / "file"), folder=True)
    made = check_output_path(str(tmp_path / "new" / "out.tif"))
    assert os.path.isdir(tmp_path / "new") and made == str(tmp_path / "new" / "out.tif")
    assert _listing(tmp_path / "new") == []  # the write probe is gone
    with pytest.raises(LandformError, match="two outputs"):
        with OutputSet() as out:
            out.file(str(tmp_path / "x.csv"))
            out.file(str(tmp_path / "x.csv"))
