"""Every output of one run committed together, or none of them.

A run with several outputs (terrain factors and their correlation table, an
evaluation report with its CSV and figure, a model with its training logs)
writes each under a hidden temporary name beside its final place; only when
the whole run succeeded are they renamed into place. A failure, a full disk or
a cancel deletes every temporary file, so no output that looks complete is
left behind and no old output is half replaced.

    with OutputSet(inputs=[dem]) as out:
        writer = out.raster("slope.tif", info, nodata=-9999)
        csv_tmp = out.file("table.csv")
        ...   # write; the renaming happens on leaving the block
"""
import errno
import os
import shutil
import uuid
from typing import List, Optional, Sequence

from .errors import LandformError
from .rasters import GeoTiffWriter, RasterInfo, check_output_path, replace_with_sidecar, write_failure


class OutputSet:
    """Temporary paths and writers for the outputs of a run, renamed on success, deleted on failure."""

    def __init__(self, inputs: Sequence[str] = ()):
        self.inputs = [str(i) for i in inputs if i]
        self._items: List[dict] = []  # {"final", "tmp", "folder", "writer"}
        self._finals: set = set()

    def _register(self, final: str, folder: bool, writer=None, tmp: Optional[str] = None) -> dict:
        final = check_output_path(final, self.inputs, folder=folder)
        if final in self._finals:
            raise LandformError(f"'{final}' is named for two outputs of the same run; give each its own file.")
        stem, ext = os.path.splitext(os.path.basename(final))
        # The extension stays last: matplotlib and GDAL choose the format from it.
        tmp = tmp or os.path.join(os.path.dirname(final), f".{stem}.{uuid.uuid4().hex[:8]}.partial{'' if folder else ext}")
        item = {"final": final, "tmp": tmp, "folder": folder, "writer": writer}
        self._items.append(item)
        self._finals.add(final)
        return item

    def file(self, final: str) -> str:
        """A temporary path to write ``final`` to (the caller writes it)."""
        return self._register(final, folder=False)["tmp"]

    def folder(self, final: str) -> str:
        """A temporary folder (created) that becomes ``final``, replacing what was there."""
        tmp = self._register(final, folder=True)["tmp"]
        os.makedirs(tmp)
        return tmp

    def raster(self, final: str, like: RasterInfo, **kw) -> GeoTiffWriter:
        """A GeoTIFF writer for ``final`` (arguments as GeoTiffWriter)."""
        item = self._register(final, folder=False)
        item["writer"] = GeoTiffWriter(item["final"], like, tmp_path=item["tmp"], **kw)
        return item["writer"]

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            first = self._items[0]["final"] if self._items else None
            self.discard()
            if isinstance(exc, OSError):
                raise os_error_message(exc, first) from None
            return False
        self.commit()
        return False

    def commit(self) -> None:
        """Close every writer, then rename every output into place; on any failure keep none."""
        try:
            for item in self._items:
                if item["writer"] is not None:
                    item["writer"].close()
        except BaseException:
            self.discard()
            raise
        done = []
        try:
            for item in self._items:
                if item["folder"] and os.path.isdir(item["final"]):
                    shutil.rmtree(item["final"])
                replace_with_sidecar(item["tmp"], item["final"])
                done.append(item)
        except OSError as exc:
            for item in done:  # the run is all or nothing: take back what was already renamed
                _remove(item["final"], item["folder"])
            self.discard()
            raise os_error_message(exc, item["final"]) from None
        self._items = []

    def discard(self) -> None:
        """Delete every temporary output (called on failure and cancel)."""
        for item in self._items:
            if item["writer"] is not None:
                item["writer"].ds = None
            _remove(item["tmp"], item["folder"])
            _remove(item["tmp"] + ".aux.xml", False)
        self._items = []


def _remove(path: str, folder: bool) -> None:
    if folder:
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def os_error_message(exc: OSError, output: Optional[str] = None) -> LandformError:
    """An OSError from writing an output, as a sentence naming the file and what to do."""
    where = exc.filename or output or "an output file"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "No space left on device"
    elif exc.errno == errno.EROFS:
        reason = "Read-only file system"
    return write_failure(str(where), reason)
