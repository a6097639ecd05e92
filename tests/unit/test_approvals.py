"""Approval forms: what the description says, and that an approval needs a name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from decisions.approvals import (
    PromotionFacts,
    ReplaceFacts,
    approver_name,
    form_errors,
    human_age,
    human_bytes,
    promotion_description,
    replace_description,
)
from decisions.deploy import FAIL, PASS, SmokeResult, approval_decision, check

SMOKE = (
    SmokeResult("GET /health", PASS, "200", "200 in 12 ms"),
    SmokeResult("GET /", PASS, "200", "200 in 9 ms"),
)
VERIFY = (
    check("staging rollout", True, "rolled out in 2.1s"),
    check("serves x", True, "3 answers"),
)


def promotion(**changes: Any) -> PromotionFacts:
    facts: dict[str, Any] = {
        "image": "registry.local/web-app:4.2.0",
        "staging": "staging",
        "production": "production",
        "production_image": "registry.local/web-app:4.1.0",
        "production_revision": 7,
        "smoke": SMOKE,
        "verification": VERIFY,
        "bake_seconds": 60,
        "timeout_s": 3600,
    }
    return PromotionFacts(**{**facts, **changes})


def test_promotion_description_names_the_change_and_the_staging_evidence() -> None:
    text = promotion_description(promotion())
    assert text.startswith("## Promote `registry.local/web-app:4.2.0` to production?")
    assert "* **new image:** `registry.local/web-app:4.2.0`" in text
    assert (
        "* **replaces in production:** `registry.local/web-app:4.1.0` "
        "(revision 7, the rollback target)"
    ) in text
    assert "* **staging (`staging`):** 4 of 4 checks passed" in text
    assert "* PASS **GET /health**: saw 200 in 12 ms (expected 200)" in text
    assert "* PASS **staging rollout**: rolled out in 2.1s" in text
    assert "**approve**" in text and "baked for 60 s" in text
    assert "roll back to revision 7" in text.replace("rolls back", "roll back")
    assert "**reject**" in text and "production keeps `registry.local/web-app:4.1.0`" in text
    assert "within 3600 s rejects" in text
    assert "approver is required" in text


def test_promotion_description_counts_failures_and_escapes_cells() -> None:
    smoke = (SmokeResult("GET /a|b", FAIL, "200", "503\nbody"),)
    text = promotion_description(promotion(smoke=smoke, verification=()))
    assert "0 of 1 checks passed" in text
    assert "* FAIL **GET /a\\|b**: saw 503 body (expected 200)" in text


def replace(**changes: Any) -> ReplaceFacts:
    facts: dict[str, Any] = {
        "database": "app",
        "backup_id": "20261130T101500Z-ab12",
        "snapshot_at": datetime(2026, 11, 30, 10, 15, tzinfo=UTC),
        "now": datetime(2026, 11, 30, 13, 45, tzinfo=UTC),
        "backup_bytes": 3 * 2**20,
        "scratch": "app_restore_x_1",
        "keep_as": "app_before_restore_1",
        "checks_passed": 12,
        "checks_failed": (),
        "live_bytes": 9 * 2**20,
        "scratch_bytes": 8 * 2**20 + 2**19,
        "rto_s": 4.25,
        "timeout_s": 600,
        "tables": (("customers", 50), ("orders", 7)),
    }
    return ReplaceFacts(**{**facts, **changes})


def test_replace_description_names_backup_age_verification_and_sizes() -> None:
    text = replace_description(replace())
    assert text.startswith("## Replace the live database `app` with backup 20261130T101500Z-ab12?")
    assert "taken 2026-11-30 10:15:00 UTC (**3 h 30 min ago**)" in text
    assert "* **dump:** 3.0 MiB, SHA-256 verified while streaming" in text
    assert "* **verification:** 12 expectations passed; passed" in text
    assert "* **live database `app`:** 9.0 MiB" in text
    assert "* **verified copy `app_restore_x_1`:** 8.5 MiB" in text
    assert "| customers | 50 |" in text and "| orders | 7 |" in text
    assert "renamed to `app_before_restore_1` (kept for rollback)" in text
    assert "`app` is left as it is and `app_restore_x_1` is dropped" in text
    assert "within 600 s rejects" in text


def test_replace_description_shows_failures_unknown_sizes_and_truncates_tables() -> None:
    tables = tuple((f"t{i}", i) for i in range(5))
    text = replace_description(
        replace(checks_failed=("rows: customers (observed 3)",), live_bytes=None, tables=tables),
        max_tables=2,
    )
    assert "1 FAILED" in text and "* rows: customers (observed 3)" in text
    assert "* **live database `app`:** unknown" in text
    assert "| t1 | 1 |" in text and "| t2 |" not in text and "… 3 more" in text


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(12, "12 s"), (125, "2 min"), (3 * 3600 + 60, "3 h 1 min"), (2 * 86400 + 7200, "2 d 2 h")],
)
def test_human_age(seconds: int, expected: str) -> None:
    assert human_age(timedelta(seconds=seconds)) == expected


def test_human_age_in_the_future_and_sizes() -> None:
    assert human_age(timedelta(seconds=-5)).startswith("in the future")
    assert (human_bytes(512), human_bytes(1536), human_bytes(None)) == (
        "512 B",
        "1.5 KiB",
        "unknown",
    )
    assert human_bytes(5 * 2**40) == "5.0 TiB"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n", None])
def test_a_blank_approver_is_nobody(blank: str | None) -> None:
    assert approver_name(blank) is None
    assert approval_decision_of(blank or "").reasons == ("the approval form names no approver",)


def approval_decision_of(approver: str) -> Any:
    from decisions.deploy import Approval

    return approval_decision(Approval(True, approver, "ok"))


def test_approver_name_is_stripped() -> None:
    assert approver_name("  alice ") == "alice"


# -- the forms (Prefect RunInput models) -------------------------------------------------------


def forms() -> list[Any]:
    from flows.deploy import ApprovalInput
    from flows.restore import RestoreApproval

    return [ApprovalInput, RestoreApproval]


@pytest.mark.parametrize("index", [0, 1])
def test_the_form_schema_requires_a_non_blank_approver(index: int) -> None:
    form = forms()[index].with_initial_data(description="## what")
    schema = form.model_json_schema()
    assert "approver" in schema["required"]
    assert schema["properties"]["approver"]["minLength"] == 1
    assert schema["properties"]["approver"]["pattern"] == r"\S"
    assert schema["properties"]["approve"]["default"] is False
    assert "leave off to reject" in schema["properties"]["approve"]["description"]
    for blank in ("", "   "):
        with pytest.raises(ValidationError, match="approver"):
            form(approve=True, approver=blank, reason="x")
    with pytest.raises(ValidationError, match="approver"):
        form(approve=True, reason="x")
    assert form(approve=True, approver="alice").approver == "alice"


def test_form_errors_name_the_field_not_the_value() -> None:
    form = forms()[0]
    with pytest.raises(ValidationError) as caught:
        form(approve=True, approver="   ", reason="secret-ish")
    message = form_errors(caught.value)
    assert message.startswith("approver: ") and "secret-ish" not in message


def test_a_blank_approver_that_got_past_the_server_rejects_the_promotion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flows.deploy as deploy

    def refused(**_: Any) -> Any:
        deploy.ApprovalInput(approve=True, approver=" ", reason="")

    monkeypatch.setattr(deploy, "pause_flow_run", refused)
    approval = deploy.ask_for_approval("## what", 60)
    assert approval is not None and not approval.approve
    decision = approval_decision(approval)
    assert decision.action == "reject"
    assert decision.reasons == ("the approval form names no approver",)


@pytest.mark.parametrize("answer", [{"approver": "  "}, "invalid"])
def test_a_blank_approver_never_replaces_the_live_database(
    monkeypatch: pytest.MonkeyPatch, answer: Any
) -> None:
    import flows.restore as restore
    from opsflows.errors import GateRejected

    def paused(**_: Any) -> Any:
        if answer == "invalid":  # the form itself refused the answer
            restore.RestoreApproval(approve=True, approver="", reason="")
        return restore.RestoreApproval.model_construct(approve=True, reason="", **answer)

    dropped: list[str] = []
    monkeypatch.setattr(restore, "pause_flow_run", paused)
    monkeypatch.setattr(restore, "drop_scratch", lambda _admin, name: dropped.append(name))
    from procedures.operation import operation_log

    monkeypatch.setattr("procedures.operation.write_oplog", lambda *_: None)
    with (
        pytest.raises(GateRejected, match="approver") as caught,
        operation_log("restore", "test", None) as record,
    ):
        restore._await_approval(None, "app_restore_x", "## what", 60, 1)  # type: ignore[arg-type]
    assert "live database is untouched" in (caught.value.hint or "")
    assert dropped == ["app_restore_x"]
    assert "approved_by" not in record.details
