"""What the access audit and the access-log review share: the policy and their reports.

Both compare the real systems against ``policy/roles.yaml`` (the roles and its ``audit:``
section, :mod:`decisions.access_expectations`), and both report a table of what they found
(or a clean summary) as artifacts; neither changes anything.
"""

# No `from __future__ import annotations`: served runs pickle flow functions by value.

from collections.abc import Sequence
from datetime import datetime

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from decisions.access import RolesPolicy, parse_policy
from decisions.access_audit import AccessFacts, Finding
from decisions.access_expectations import AuditExpectations, parse_expectations
from decisions.access_log import LogReview
from procedures.approval_gate import read_policy_document

AUDIT_KEY = "access-audit"
LOG_REVIEW_KEY = "access-log-review"
NOT_REVOKED = (
    "The audit revokes nothing: each recommendation is a separate change, approved and "
    "recorded like any other (the policy role's `revoke` says how)."
)


def load_audit_policy() -> tuple[RolesPolicy, AuditExpectations]:
    """The roles policy and its ``audit:`` expectations (the ``roles_file`` setting)."""
    raw = read_policy_document()
    policy = parse_policy(raw)
    return policy, parse_expectations(raw, policy)


def publish_findings(findings: Sequence[Finding], facts: AccessFacts, now: datetime) -> None:
    """The ``access-audit`` table of findings, or a clean summary when there are none."""
    checked = (
        f"{sum(r.login for r in facts.pg_roles)} PostgreSQL login roles, "
        f"{len(facts.rbac.bindings)} Kubernetes bindings, "
        f"{len(facts.rbac.service_accounts)} ServiceAccounts, {len(facts.secrets)} secrets, "
        f"{len(facts.blocks)} credential blocks"
    )
    if not findings:
        create_markdown_artifact(
            markdown=f"# Access audit {now.date().isoformat()}: no drift\n\nChecked {checked} "
            "against policy/roles.yaml: everything matches.\n",
            key=AUDIT_KEY,
            description=f"Access audit: no drift ({checked})",
        )
        return
    create_table_artifact(
        table=[
            {
                "area": f.area,
                "subject": f.subject,
                "drift": f.problem,
                "evidence": f.evidence,
                "recommendation (not done by the audit)": f.recommendation,
            }
            for f in findings
        ],
        key=AUDIT_KEY,
        description=f"Access audit: {len(findings)} finding(s) in {checked}. {NOT_REVOKED}",
    )


def publish_log_review(result: LogReview) -> None:
    """The ``access-log-review`` table: per role and source, logins, failures and verdict."""
    since, until = (d.isoformat(timespec="seconds") for d in (result.since, result.until))
    period = f"{since} to {until}"
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for (role, source), n in result.logins.items():
        rows.setdefault((role, source), _row(role, source))["logins"] = n
    for (role, source, reason), n in result.failures.items():
        row = rows.setdefault((role, source), _row(role, source))
        row["failed logins"] = int(str(row["failed logins"])) + n
        row["failure reasons"] = ", ".join(filter(None, [str(row["failure reasons"]), reason]))
    for s in result.suspicious:
        row = rows.setdefault((s.role, s.source), _row(s.role, s.source))
        row["suspicious"] = "; ".join(filter(None, [str(row["suspicious"]), s.detail]))
    if not rows:
        create_markdown_artifact(
            markdown=f"# Access-log review\n\nNo logins logged from {period} "
            f"({result.lines_read} lines read).\n",
            key=LOG_REVIEW_KEY,
            description="Access-log review: no logins in the period",
        )
        return
    verdict = (
        "nothing suspicious" if result.clean else f"{len(result.suspicious)} suspicious pattern(s)"
    )
    create_table_artifact(
        table=[rows[k] for k in sorted(rows)],
        key=LOG_REVIEW_KEY,
        description=f"Access-log review {period}: {verdict} ({result.lines_read} lines read). "
        "Nothing is blocked by the review.",
    )


def _row(role: str, source: str) -> dict[str, object]:
    return {
        "role": role,
        "source": source,
        "logins": 0,
        "failed logins": 0,
        "failure reasons": "",
        "suspicious": "",
    }
