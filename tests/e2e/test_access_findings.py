"""The access audit and the access-log review end to end on the local stack.

A clean stack gives no finding and nothing suspicious; seeded violations (``tests/
access_support.py``: an extra superuser, a RoleBinding to an unknown user, a secret not
rotated for 40 days, repeated failed logins) are all found, recorded and paged as P3, and
removed again by the test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from devstack.stack import StackInfo, stack_secrets
from flows.access_audit import access_audit
from flows.access_log_review import access_log_review
from tests.access_support import failed_logins, login, sink_mentions, violations
from tests.support import flow_run_id, oplog_row

pytestmark = pytest.mark.usefixtures("bootstrapped")


def _artifacts(run_id: Any, key: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return [a for a in found if a.key == key]


def test_a_clean_stack_has_no_drift(stack: StackInfo) -> None:
    state = access_audit(return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == {"findings": 0, "clean": True}
    run_id = flow_run_id(state)
    row = oplog_row(stack, run_id)
    details = row["details"]
    assert row["status"] == "succeeded" and row["impact"].startswith("no change")
    assert details["findings"] == []
    assert {"postgres", "app", "opsflows", "prefect"} <= set(details["login_roles"])
    assert details["password_age"]["app"].endswith(
        "(secret opsflows/app/db); valid until no expiry"
    )
    assert "opsflows-postgres-target/app-db" in details["credential_blocks"]
    assert details["bindings"] >= 9
    (artifact,) = _artifacts(run_id, "access-audit")
    assert artifact.type == "markdown" and "no drift" in str(artifact.data)


def test_seeded_violations_are_found_reported_and_paged(stack: StackInfo) -> None:
    with violations(stack) as v:
        state = access_audit(return_state=True)
        assert state.is_completed(), state.message
        run_id = flow_run_id(state)
        details = oplog_row(stack, run_id)["details"]
        found = {(f["area"], f["subject"]): f["drift"] for f in details["findings"]}
        mine = {k: d for k, d in found.items() if v.marker in k[1]}
        assert mine == {
            ("postgres", v.role): "superuser not expected (neither a service role nor a policy "
            "member)",
            ("kubernetes", f"User/{v.user}"): "not a member of the roles policy",
            ("secrets", v.secret): "not rotated for 40 days (over 35)",
        }
        (artifact,) = _artifacts(run_id, "access-audit")
        rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
        assert {r["subject"] for r in rows} == {v.role, f"User/{v.user}", v.secret}
        assert "revokes nothing" in artifact.description
        pages = sink_mentions(stack, "notify", v.marker)
        assert len(pages) == 1 and "[P3] access audit: " in pages[0]["body"]["subject"]
        assert v.password not in json.dumps(pages) + json.dumps(details) + str(artifact.data)
    # Removed again: the next audit is clean.
    assert access_audit(return_state=True).result()["findings"] == 0


def test_the_log_review_of_a_clean_period_finds_nothing(stack: StackInfo) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    login(stack, "app", stack_secrets_app(stack))
    state = access_log_review(since=since, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["clean"] and result["logins"] >= 1 and result["suspicious"] == 0
    details = oplog_row(stack, flow_run_id(state))["details"]
    assert details["log_file"] == str(stack.postgres_log_file) and details["suspicious"] == []


def stack_secrets_app(stack: StackInfo) -> str:
    from devstack.bootstrap import current_app_credential
    from opsflows.settings import Settings

    return current_app_credential(stack, stack_secrets(Settings().state_dir))[1]


def test_repeated_failed_logins_and_an_unexpected_login_are_suspicious(stack: StackInfo) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    with violations(stack) as v:
        failed_logins(stack, v.role, 5)
        login(stack, v.role, v.password)
        failed_logins(stack, "app", 4)  # under the threshold: counted, not suspicious
        state = access_log_review(since=since, failed_threshold=5, return_state=True)
        assert state.is_completed(), state.message
        row = oplog_row(stack, flow_run_id(state))
        suspicious = {(s["kind"], s["role"]) for s in row["details"]["suspicious"]}
        assert {k for k in suspicious if k[1] == v.role} == {
            ("repeated failures", v.role),
            ("login not expected", v.role),
        }
        assert ("repeated failures", "app") not in suspicious  # 4: under the threshold
        assert row["details"]["failed_logins"] >= 9
        assert f"repeated failures: {v.role} from 127.0.0.1: 5 failed" in row["issues"]
        pages = sink_mentions(stack, "notify", v.role)
        assert len(pages) == 1 and "[P3] access-log review: " in pages[0]["body"]["subject"]


def test_a_log_that_is_not_there_is_refused_before_anything_is_read(tmp_path: Any) -> None:
    state = access_log_review(log_file=str(tmp_path / "nope.log"), return_state=True)
    assert state.is_failed()
    assert "does not exist on this machine" in str(state.message)
    with pytest.raises(Exception, match="failed_threshold must be at least 1"):
        access_log_review(failed_threshold=0)
