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
    from procedures.replace_live import RestoreApproval

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


class _Pauses:
    """Stands in for ``pause_flow_run``: each call returns (or raises) the next answer."""

    def __init__(self, form: Any, answers: list[Any]) -> None:
        self.form, self.answers, self.keys = form, list(answers), []

    def __call__(self, **kwargs: Any) -> Any:
        from prefect.exceptions import FlowPauseTimeout

        self.keys.append(kwargs["key"])
        if not self.answers:
            raise FlowPauseTimeout("nobody answered")
        answer = self.answers.pop(0)
        if answer == "invalid":  # the form itself refused the answer
            self.form(approve=True, approver="", reason="")
        return self.form.model_construct(**{"reason": "", **answer})


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Any:
    """procedures.approval_gate with the pause and the run context replaced."""
    import logging

    import procedures.approval_gate as gate

    monkeypatch.setattr(gate, "get_run_logger", lambda: logging.getLogger("gate-test"))
    monkeypatch.setattr(gate, "running_again", lambda: None)
    monkeypatch.setattr("procedures.operation.write_oplog", lambda *_: None)
    return gate


def _ask(module: Any, monkeypatch: pytest.MonkeyPatch, form: Any, answers: list[Any], **kw: Any):
    from procedures.operation import operation_log

    pauses = _Pauses(form, answers)
    monkeypatch.setattr(module, "pause_flow_run", pauses)
    with operation_log("test", "test", None) as record:
        answer = module.ask(form, "## what", timeout_s=60, poll_s=1, key="k", **kw)
    return answer, record.details, pauses.keys


PROMOTE = {"gate": "promote-production", "environment": "production", "runbook": "staged-deploy"}
LIVE = {"gate": "replace-live-database", "environment": "production", "runbook": "restore-database"}


def test_blank_invalid_and_outsider_approvals_are_refused_and_the_gate_waits_on(
    gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.deploy import ApprovalInput

    answers = [{"approve": True, "approver": " "}, "invalid", {"approve": True, "approver": "eve"}]
    answer, details, keys = _ask(gate, monkeypatch, ApprovalInput, answers, **PROMOTE)
    assert answer is None, "nobody allowed answered: the gate timed out"
    assert keys == ["k-1", "k-2", "k-3", "k-4"], "each refusal shows the form again"
    whys = [r["why"] for r in details["approval_refusals"]]
    assert "names no approver" in whys[0] or "form names no approver" in whys[0]
    assert whys[1].startswith("the form was refused (approver:")
    assert "eve is not in the roles policy" in whys[2]
    assert "approvals" not in details


def test_an_allowed_approver_opens_the_promotion_gate_after_a_refusal(
    gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.deploy import ApprovalInput

    answers = [{"approve": True, "approver": "dana"}, {"approve": True, "approver": "Alice"}]
    answer, details, _ = _ask(gate, monkeypatch, ApprovalInput, answers, **PROMOTE)
    assert answer is not None and answer.approve and answer.approvers == ("alice",)
    assert [r["approver"] for r in details["approval_refusals"]] == ["dana"]
    assert details["approvals"][0]["role"] == "on-call"


def test_anyone_named_may_reject(gate: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.deploy import ApprovalInput

    answers = [{"approve": False, "approver": "mallory", "reason": "looks wrong"}]
    answer, _, _ = _ask(gate, monkeypatch, ApprovalInput, answers, **PROMOTE)
    assert answer is not None and not answer.approve and answer.approver == "mallory"


def test_one_dba_alone_never_replaces_the_live_database(
    gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from procedures.replace_live import RestoreApproval

    answers = [{"approve": True, "approver": "dana"}, {"approve": True, "approver": " Dana"}]
    answer, details, _ = _ask(gate, monkeypatch, RestoreApproval, answers, **LIVE)
    assert answer is None
    assert [a["approver"] for a in details["approvals"]] == ["dana"]
    assert "already approved" in details["approval_refusals"][0]["why"]
    answers = [{"approve": True, "approver": "dana"}, {"approve": True, "approver": "erin"}]
    answer, _, _ = _ask(gate, monkeypatch, RestoreApproval, answers, **LIVE)
    assert answer is not None and answer.approvers == ("dana", "erin")


def test_a_refused_replace_times_out_drops_the_scratch_and_records_no_approver(
    gate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import procedures.replace_live as restore
    from opsflows.errors import ApprovalTimedOut
    from procedures.operation import operation_log

    dropped: list[str] = []
    monkeypatch.setattr(gate, "pause_flow_run", _Pauses(restore.RestoreApproval, ["invalid"]))
    monkeypatch.setattr(restore, "drop_scratch", lambda _admin, name: dropped.append(name))
    with (
        pytest.raises(ApprovalTimedOut, match="did not approve") as caught,
        operation_log("restore", "test", None) as record,
    ):
        restore.await_replace_approval(None, "app_restore_x", "## what", 60, 1)  # type: ignore[arg-type]
    assert "live database is untouched" in (caught.value.hint or "")
    assert dropped == ["app_restore_x"]
    assert "approved_by" not in record.details


def test_a_missing_policy_file_fails_before_anyone_is_asked(
    gate: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from flows.deploy import ApprovalInput
    from opsflows.errors import ConfigurationError
    from opsflows.settings import get_settings

    monkeypatch.setattr(get_settings(), "roles_file", tmp_path / "nope.yaml")
    with pytest.raises(ConfigurationError, match="does not exist"):
        _ask(gate, monkeypatch, ApprovalInput, [], **PROMOTE)
