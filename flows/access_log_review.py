"""Access-log review runbook (monthly): who logged in to PostgreSQL, and who failed to.

RUNBOOK.md "Regular Security Tasks": *Monthly: review access logs for suspicious activity*.
Reads the PostgreSQL server's log on this machine (the served process runs beside the
server; ``log_file`` or ``OPSFLOWS_POSTGRES_LOG_FILE`` names it) for the period, counts
successful and failed logins per role and source, and flags what is suspicious: repeated
failed logins for one role from one source (``failed_threshold``), logins by roles that should
not log in, logins outside the policy (a database the role is not expected to use). Summary
artifact ``access-log-review``, operation log, P3 when suspicious. Blocks nothing.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow

from decisions.access_log import review
from opsflows.errors import ConfigurationError
from opsflows.settings import get_settings
from procedures.access_review import load_audit_policy, publish_log_review
from procedures.operation import (
    ROUTING,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from tasks.pg_log import read_login_events


@flow(name="access-log-review")
def access_log_review(
    days: float = 31,
    since: datetime | None = None,
    failed_threshold: int = 5,
    log_file: str | None = None,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Review the PostgreSQL connection log of the period: logins and failed logins per role
    and source; P3 when suspicious. Changes nothing.

    Args:
        days: the period ends now and starts this many days ago (the monthly run: 31).
        since: start the period here instead (an ISO time, UTC when no zone is given).
        failed_threshold: this many failed logins for one role from one source is suspicious.
        log_file: the server log to read (default: the OPSFLOWS_POSTGRES_LOG_FILE setting).
        routing: NotificationRouting block; suspicious activity goes out as P3.
    """
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with operation_log("access-log review", "monthly access-log review", ops_db, routes) as rec:
        until = datetime.now(UTC)
        if since is None and days <= 0:
            raise ConfigurationError("days must be positive", hint="e.g. days=31")
        if failed_threshold < 1:
            raise ConfigurationError("failed_threshold must be at least 1", hint="e.g. 5")
        start = (since if since.tzinfo else since.replace(tzinfo=UTC)) if since else None
        start = start or until - timedelta(days=days)
        if start >= until:
            raise ConfigurationError(f"since {start.isoformat()} is not in the past")
        where = log_file or get_settings().postgres_log_file
        if not where:
            raise ConfigurationError(
                "no PostgreSQL log to review",
                hint="pass log_file, or set OPSFLOWS_POSTGRES_LOG_FILE (the devstack's env does)",
            )
        _, expect = load_audit_policy()
        events, lines = read_login_events(Path(where), start, until)
        result = review(events, expect, start, until, failed_threshold, lines_read=lines)
        publish_log_review(result)
        rec.impact = "no change (read-only review)"
        rec.details.update(
            since=start.isoformat(),
            until=until.isoformat(),
            log_file=str(where),
            lines_read=lines,
            logins=sum(result.logins.values()),
            failed_logins=sum(result.failures.values()),
            suspicious=[
                {"kind": s.kind, "role": s.role, "source": s.source, "count": s.count}
                for s in result.suspicious
            ],
        )
        if not result.clean:
            rec.issues.extend(
                f"{s.kind}: {s.role} from {s.source}: {s.detail}" for s in result.suspicious
            )
            rec.follow_up.append(
                "investigate the suspicious logins (who, from where); block or rotate by an "
                "approved change"
            )
            lines_text = "\n".join(
                f"- {s.kind}: {s.role} from {s.source}: {s.detail}" for s in result.suspicious[:20]
            )
            rec.details["notified"] = safe_notify(
                "P3",
                f"access-log review: {len(result.suspicious)} suspicious pattern(s)",
                f"The monthly review of PostgreSQL's connection log ({start.date()} to "
                f"{until.date()}) found:\n{lines_text}\n\nSee the access-log-review artifact.",
            )
        return {
            "logins": sum(result.logins.values()),
            "failed_logins": sum(result.failures.values()),
            "suspicious": len(result.suspicious),
            "clean": result.clean,
        }
