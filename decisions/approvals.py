"""What a person approves: the markdown shown above an approval form, and who approved.

The runbooks pause for a person twice: the promotion gate of a staged deploy and the
replacement of a live database by a verified restore. Prefect shows a pause's description
(markdown) above the form in the UI; these pure functions write it from the facts the flow
measured, so the approver sees what they are approving, and what approve and reject do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from decisions.deploy import Check, SmokeResult

#: The form's approver field refuses a blank name before submission (``min_length``) and
#: a name of spaces only (``pattern``: at least one non-space character).
APPROVER_PATTERN = r"\S"


def approver_name(approver: str | None) -> str | None:
    """The approver's name, stripped; None when the form named nobody (blank or spaces)."""
    name = (approver or "").strip()
    return name or None


class _HasErrors(Protocol):
    def errors(self) -> Sequence[Mapping[str, Any]]: ...


def form_errors(exc: _HasErrors) -> str:
    """A form's validation errors (a pydantic ``ValidationError``) in one line, no values."""
    parts = [
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'form'}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    ]
    return "; ".join(parts) or "the form is not valid"


def _cell(text: object) -> str:
    """A value safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def human_bytes(size: int | None) -> str:
    """``1.5 GiB`` style sizes; ``unknown`` when not measured."""
    if size is None or size < 0:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_age(age: timedelta) -> str:
    """``3 d 4 h``, ``5 h 12 min``, ``42 min``, ``12 s``; ``in the future`` when negative."""
    seconds = int(age.total_seconds())
    if seconds < 0:
        return "in the future (check the server clocks)"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


# -- promotion -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionFacts:
    """What a promotion changes and what staging showed."""

    image: str
    staging: str
    production: str
    production_image: str
    production_revision: int
    smoke: Sequence[SmokeResult]
    verification: Sequence[Check]
    bake_seconds: float
    timeout_s: int


def promotion_description(facts: PromotionFacts) -> str:
    """The markdown above the promotion form: the change, the staging evidence, the choices.

    Lists rather than wide tables: the UI shows it in a narrow dialog.
    """
    passed = sum(r.passed for r in facts.smoke) + sum(c.passed for c in facts.verification)
    total = len(facts.smoke) + len(facts.verification)
    lines = [
        f"## Promote `{facts.image}` to {facts.production}?",
        "",
        f"* **new image:** `{facts.image}`",
        f"* **replaces in {facts.production}:** `{facts.production_image}` "
        f"(revision {facts.production_revision}, the rollback target)",
        f"* **staging (`{facts.staging}`):** {passed} of {total} checks passed",
        "",
        f"### Staging results ({facts.staging})",
        "",
    ]
    lines += [
        f"* {r.verdict.upper()} **{_cell(r.name)}**: saw {_cell(r.measured)} "
        f"(expected {_cell(r.expected)})"
        for r in facts.smoke
    ]
    lines += [
        f"* {c.verdict.upper()} **{_cell(c.name)}**" + (f": {_cell(c.detail)}" if c.detail else "")
        for c in facts.verification
    ]
    lines += [
        "",
        "### What your answer does",
        "",
        f"* **approve** (with your name): `{facts.image}` rolls out to {facts.production}, "
        f"which is baked for {facts.bake_seconds:g} s on health, error rate and p95 latency; "
        f"any failed check rolls back to revision {facts.production_revision} "
        f"(`{facts.production_image}`).",
        f"* **reject** (approve off): the run stops; {facts.production} keeps "
        f"`{facts.production_image}`, staging keeps `{facts.image}`.",
        f"* no answer within {facts.timeout_s} s rejects.",
        "",
        "The approver is required and recorded in the operation log with the reason.",
    ]
    return "\n".join(lines)


# -- replacing a live database ---------------------------------------------------------------


@dataclass(frozen=True)
class ReplaceFacts:
    """What replacing a live database with a verified restore changes."""

    database: str
    backup_id: str
    snapshot_at: datetime
    now: datetime
    backup_bytes: int
    scratch: str
    keep_as: str
    checks_passed: int
    checks_failed: Sequence[str]
    live_bytes: int | None
    scratch_bytes: int | None
    rto_s: float
    timeout_s: int
    tables: Sequence[tuple[str, int]] = ()


def replace_description(facts: ReplaceFacts, max_tables: int = 50) -> str:
    """The markdown above the replace-live form: the backup, the verification, the sizes."""
    age = human_age(facts.now - facts.snapshot_at)
    verdict = "passed" if not facts.checks_failed else f"{len(facts.checks_failed)} FAILED"
    lines = [
        f"## Replace the live database `{facts.database}` with backup {facts.backup_id}?",
        "",
        f"* **backup:** {facts.backup_id}, taken {facts.snapshot_at:%Y-%m-%d %H:%M:%S} UTC "
        f"(**{age} ago**)",
        f"* **dump:** {human_bytes(facts.backup_bytes)}, SHA-256 verified while streaming",
        f"* **verification:** {facts.checks_passed} expectations passed; {verdict}",
        f"* **live database `{facts.database}`:** {human_bytes(facts.live_bytes)}",
        f"* **verified copy `{facts.scratch}`:** {human_bytes(facts.scratch_bytes)}",
        f"* **time to a verified restore:** {facts.rto_s:.1f} s",
    ]
    if facts.checks_failed:
        lines += ["", "Failed expectations:", ""]
        lines += [f"* {_cell(f)}" for f in facts.checks_failed[:10]]
    if facts.tables:
        lines += ["", "| table | rows in the backup |", "|---|---|"]
        lines += [f"| {_cell(name)} | {rows} |" for name, rows in facts.tables[:max_tables]]
        if len(facts.tables) > max_tables:
            lines.append(f"| … {len(facts.tables) - max_tables} more | |")
    lines += [
        "",
        "### What your answer does",
        "",
        f"* **approve** (with your name): connections to `{facts.database}` are terminated, "
        f"it is renamed to `{facts.keep_as}` (kept for rollback) and `{facts.scratch}` takes "
        "its name. Changes made since the backup are no longer in the live database.",
        f"* **reject** (approve off): `{facts.database}` is left as it is and "
        f"`{facts.scratch}` is dropped.",
        f"* no answer within {facts.timeout_s} s rejects.",
        "",
        "The approver is required and recorded in the operation log with the reason.",
    ]
    return "\n".join(lines)
