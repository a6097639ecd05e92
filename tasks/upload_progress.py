"""A Prefect progress artifact for a long upload, sent without holding the upload up.

The uploader reports after every part; at most every ``every_s`` seconds that report goes to
the Prefect API on a short-lived thread of its own (in the reporting task run's context, so
the artifact belongs to that run). A report is dropped while the previous one is still being
sent: the next one carries newer figures. The upload's thread never waits for the API (a
create costs 40-110 ms on a busy server; the part queue would fill behind it).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

#: How long ``finish`` waits for a report still being sent (then it gives up on the 100%).
FINISH_WAIT_S = 10.0


class UploadProgress:
    """``progress(part, done)`` while uploading, ``progress.finish(done, parts)`` at the end.

    Created with the first report, not before the upload starts: one API call less ahead of
    the stream. Best effort: a failure to report is never the upload's failure.
    """

    def __init__(self, key: str, expected: int, every_s: float = 2.0) -> None:
        self.key, self.expected, self.every_s = key, max(expected, 1), every_s
        self.artifact: Any = None
        self.last = time.monotonic()
        self.sent = 0
        self._context = contextvars.copy_context()
        self._sender: threading.Thread | None = None

    def __call__(self, part: int, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s or self._sending():
            return
        self.last = now
        share = min(99.0, 100.0 * done / self.expected)
        self._sender = threading.Thread(
            target=self._context.run,
            args=(self._show, share, done, part),
            name="upload-progress",
            daemon=True,
        )
        self._sender.start()

    def finish(self, done: int, parts: int) -> None:
        """Show 100% (after the report in flight, if any, so the last word is this one)."""
        if self._sender is not None:
            self._sender.join(timeout=FINISH_WAIT_S)
        if not self._sending():
            self._show(100.0, done, parts)

    def _sending(self) -> bool:
        return self._sender is not None and self._sender.is_alive()

    def _show(self, share: float, done: int, parts: int) -> None:
        description = f"{done / 2**20:.0f} MiB in {parts} parts"
        with contextlib.suppress(Exception):  # progress is best effort, never fatal
            if self.artifact is None:
                self.artifact = create_progress_artifact(
                    share, key=self.key, description=description
                )
            else:
                update_progress_artifact(self.artifact, share, description=description)
            self.sent += 1
