"""Progress and cancellation as the core sees them, independent of QGIS.

The Processing algorithms wrap their QgsProcessingFeedback in a ``Progress``;
command-line and cluster callers use the default, which logs nothing and never
cancels.
"""
from typing import Callable, Optional

from .errors import Cancelled


class Progress:
    """Reports progress in percent and raises ``Cancelled`` when asked to stop."""

    def __init__(
        self,
        set_progress: Optional[Callable[[float], None]] = None,
        is_cancelled: Optional[Callable[[], bool]] = None,
        log: Optional[Callable[[str], None]] = None,
    ):
        self._set_progress = set_progress
        self._is_cancelled = is_cancelled
        self._log = log

    def update(self, percent: float) -> None:
        if self._set_progress is not None:
            self._set_progress(max(0.0, min(100.0, float(percent))))

    def cancelled(self) -> bool:
        return bool(self._is_cancelled and self._is_cancelled())

    def check(self) -> None:
        """Raise ``Cancelled`` if the user asked to stop; call it inside every loop."""
        if self.cancelled():
            raise Cancelled("Cancelled by the user")

    def info(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def sub(self, start: float, end: float) -> "Progress":
        """A Progress that maps 0-100 onto [start, end] of this one (for stages)."""
        parent = self
        span = end - start
        return Progress(
            set_progress=lambda p: parent.update(start + span * p / 100.0),
            is_cancelled=parent.cancelled,
            log=parent.info,
        )
