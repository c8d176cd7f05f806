"""Every output of one run committed together, or none of them; output locations
checked before any work.

A run with several outputs (terrain factors and their correlation table, an
evaluation report with its CSV and figure, a model with its training reports)
writes each under a hidden temporary name beside its final place; only when
the whole run succeeded are they renamed into place. A failure, a full disk or
a cancel deletes every temporary file, so no output that looks complete is
left behind and no old output is half replaced.

    with OutputSet(inputs=[dem]) as out:
        writer = rasters.GeoTiffWriter("slope.tif", info, outputs=out, nodata=-9999)
        table = out.file("table.csv")
        ...   # write both; the renaming happens on leaving the block

Plain Python (no GDAL, no torch): training uses it on machines without GDAL.
"""
import errno
import os
import shutil
import tempfile
import uuid
from typing import List, Optional, Sequence

from .errors import LandformError


class OutputSet:
    """Temporary paths for the outputs of a run, renamed on success, deleted on failure."""

    def __init__(self, inputs: Sequence[str] = ()):
        self.inputs = [str(i) for i in inputs if i]
        self._items: List[dict] = []  # {"final", "tmp", "folder", "writer"}

    def _register(self, final: str, folder: bool, writer=None) -> dict:
        final = check_output_path(final, self.inputs, folder=folder)
        if any(item["final"] == final for item in self._items):
            raise LandformError(f"'{final}' is named for two outputs of the same run; give each its own file.")
        stem, ext = os.path.splitext(os.path.basename(final))
        # The extension stays last: matplotlib and GDAL choose the format from it.
        tmp = os.path.join(os.path.dirname(final), f".{stem}.{uuid.uuid4().hex[:8]}.partial{'' if folder else ext}")
        item = {"final": final, "tmp": tmp, "folder": folder, "writer": writer}
        self._items.append(item)
        return item

    def file(self, final: str, writer=None) -> str:
        """A temporary path to write ``final`` to. ``writer``: an object whose ``close()``
        must run before renaming and ``discard()`` on failure (rasters.GeoTiffWriter)."""
        return self._register(final, folder=False, writer=writer)["tmp"]

    def folder(self, final: str) -> str:
        """A temporary folder (created) that becomes ``final``, replacing what was there."""
        tmp = self._register(final, folder=True)["tmp"]
        os.makedirs(tmp)
        return tmp

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            where = self._final_for(getattr(exc, "filename", None))
            self.discard()
            if isinstance(exc, OSError):
                raise os_error_message(exc, where) from None
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
        for item in self._items:
            try:
                if item["folder"] and os.path.isdir(item["final"]):
                    shutil.rmtree(item["final"])
                replace_with_sidecar(item["tmp"], item["final"])
            except OSError as exc:
                for renamed in done:  # all or nothing: take back what was already renamed
                    _remove(renamed["final"], renamed["folder"])
                self.discard()
                raise os_error_message(exc, item["final"]) from None
            done.append(item)
        self._items = []

    def _final_for(self, filename: Optional[str]) -> Optional[str]:
        """The output the user named for a temporary ``filename`` (else ``filename``, else the first output)."""
        for item in self._items:
            if filename and (filename == item["tmp"] or str(filename).startswith(item["tmp"] + os.sep)):
                return item["final"]
        return filename or (self._items[0]["final"] if self._items else None)

    def discard(self) -> None:
        """Delete every temporary output (on failure and cancel)."""
        for item in self._items:
            if item["writer"] is not None:
                item["writer"].discard()
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
    where = output or exc.filename or "an output file"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "No space left on device"
    elif exc.errno == errno.EROFS:
        reason = "Read-only file system"
    return write_failure(str(where), reason)


def write_failure(path: str, reason: str) -> LandformError:
    """The user-facing error for an output that could not be written."""
    low = reason.lower()
    if "no space" in low or "disk full" in low:
        what = "the disk is full: free some space or choose another folder"
    elif "read-only" in low or "permission" in low:
        what = "the folder is not writable: choose a folder you can write to"
    else:
        what = "check that the folder is writable and has free space"
    return LandformError(f"Could not write '{path}' ({reason}); {what}. No output was kept.")


def replace_with_sidecar(tmp: str, path: str) -> None:
    """Move ``tmp`` onto ``path``; GTiff keeps category names (and other PAM metadata)
    in a side-car .aux.xml: move it with the file, or the class names are lost."""
    for stale in (path, path + ".aux.xml"):
        if os.path.isfile(stale):
            os.remove(stale)
    os.replace(tmp, path)
    if os.path.exists(tmp + ".aux.xml"):
        os.replace(tmp + ".aux.xml", path + ".aux.xml")


def check_output_path(path: str, inputs: Sequence[str] = (), folder: bool = False) -> str:
    """Check before any work that ``path`` can be written: its folder exists (or is
    created) and is a writable folder, it is not an input, and (``folder``) it is not
    a file. Returns the absolute path; raises LandformError saying what to change."""
    if not path:
        raise LandformError("No output file was given.")
    out = os.path.abspath(str(path))
    if os.path.isdir(out) and not folder:
        raise LandformError(f"The output '{out}' is a folder; give a file name inside it.")
    if folder and os.path.exists(out) and not os.path.isdir(out):
        raise LandformError(f"The output folder '{out}' is a file; choose a folder.")
    for src in inputs:
        src = str(src or "").partition("|")[0]
        if src and os.path.exists(src) and os.path.exists(out) and os.path.samefile(src, out):
            raise LandformError(f"The output '{out}' is also an input; choose another output name (the input would be overwritten).")
    parent = os.path.dirname(out)
    _ensure_folder(parent, out)
    _probe_writable(parent, out)
    return out


def _ensure_folder(parent: str, out: str) -> None:
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise LandformError(
            f"Cannot write '{out}': '{existing}' is a file, not a folder. Choose an output in a folder."
        )
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise LandformError(
            f"Cannot create the folder '{parent}' for '{out}' ({exc.strerror}); choose a folder you can write to."
        ) from None


def _probe_writable(parent: str, out: str) -> None:
    """File modes do not stop root (tests and containers run as root); only writing tells."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".landform_probe_", dir=parent)
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        raise LandformError(
            f"Cannot write '{out}': the folder '{parent}' is not writable ({why}). Choose a folder you can write to."
        ) from None
    os.close(fd)
    os.remove(probe)
