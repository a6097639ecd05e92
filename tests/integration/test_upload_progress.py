"""The upload's progress artifact, sent from its own thread, still belongs to the run that
reports it, ends at 100% with the final figures, and never fails the upload."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import get_run_context

from tasks.upload_progress import UploadProgress

pytestmark = pytest.mark.usefixtures("prefect_api")
MIB = 2**20


@flow(name="upload-progress-check")
def _upload(parts: int, every_s: float) -> tuple[str, int, set[str]]:
    progress = UploadProgress("backup-upload", expected=parts * 8 * MIB, every_s=every_s)
    senders: set[str] = set()
    for part in range(1, parts + 1):
        progress(part, part * 8 * MIB)
        time.sleep(0.05)
        if progress._sender is not None:
            senders.add(progress._sender.name)
    progress.finish(parts * 8 * MIB, parts)
    run: Any = get_run_context()
    return str(run.flow_run.id), progress.sent, senders


def _artifacts(run_id: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )


def test_the_reports_reach_the_runs_artifact_and_end_at_100() -> None:
    run_id, sent, senders = _upload(6, every_s=0.01)
    assert senders == {"upload-progress"}, "reports are sent from their own thread"
    assert sent >= 2, "at least one report while uploading, and the final one"
    found = _artifacts(run_id)
    assert [a.type for a in found] == ["progress"], "one artifact, updated in place"
    assert found[0].key == "backup-upload"
    assert found[0].data == 100.0
    assert found[0].description == "48 MiB in 6 parts"


def test_the_uploading_thread_does_not_wait_for_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow API costs the uploader nothing: the report in flight is let be, newer ones are
    dropped until it is through, and the last word is still 100%."""
    import tasks.upload_progress as module

    release = threading.Event()
    real = module.create_progress_artifact

    def slow_create(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "create_progress_artifact", slow_create)

    @flow(name="upload-progress-slow-api")
    def slow() -> tuple[str, float]:
        progress = UploadProgress("backup-upload", expected=4 * MIB, every_s=0.0)
        began = time.monotonic()
        for part in range(1, 5):
            progress(part, part * MIB)
        reporting = time.monotonic() - began
        release.set()
        progress.finish(4 * MIB, 4)
        run: Any = get_run_context()
        return str(run.flow_run.id), reporting

    run_id, reporting = slow()
    assert reporting < 1.0, f"four reports held the uploader {reporting:.1f} s"
    found = _artifacts(run_id)
    assert [(a.data, a.description) for a in found] == [(100.0, "4 MiB in 4 parts")]


def test_a_failing_api_never_fails_the_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.upload_progress as module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the Prefect API is down")

    monkeypatch.setattr(module, "create_progress_artifact", broken)
    run_id, sent, _ = _upload(3, every_s=0.0)
    assert sent == 0 and _artifacts(run_id) == []
