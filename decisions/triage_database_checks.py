"""The database-slow runbook's checklist: the diagnosis in the runbook's order, the checks
after ending sessions, and the approval form's table (pure; the decisions themselves are in
:mod:`decisions.triage_database`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from decisions.triage import Check
from decisions.triage_database import (
    HOST_CPU_LIMIT,
    HOST_MEMORY_LIMIT,
    PROBE_AFTER,
    TOP_STATEMENTS,
    DatabaseDecision,
    DatabaseFacts,
    Policy,
    Session,
    Target,
    lock_chains,
    redact,
)


def restart_recommendation(database: str) -> Check:
    """The restart the runbook never does itself: a recommendation in the checklist."""
    return Check(
        "restart the database (recommendation)",
        None,
        f"if {database} stays slow, restarting PostgreSQL needs a person's approval; not done "
        "by the runbook (in the devstack the same server holds the Prefect server's and the "
        "operations databases, so a restart would stop every runbook)",
    )


def _share(value: float | None, limit: float, what: str, error: str) -> tuple[bool | None, str]:
    if value is None:
        return None, error
    return value <= limit, f"{value:.0%} {what} (limit {limit:.0%}, node_exporter)"


def database_slow_checks(
    facts: DatabaseFacts, rules: Policy, decision: DatabaseDecision
) -> list[Check]:
    """The checklist items of the diagnosis, in the runbook's order."""
    cpu_ok, cpu = _share(facts.cpu, HOST_CPU_LIMIT, "CPU busy over 1m", facts.error("cpu"))
    mem_ok, mem = _share(facts.memory, HOST_MEMORY_LIMIT, "memory used", facts.error("memory"))
    checks = [Check("database host CPU", cpu_ok, cpu), Check("database host memory", mem_ok, mem)]
    if facts.statements is None:
        checks.append(Check("slowest statements", None, facts.error("statements")))
    else:
        top = facts.statements[:TOP_STATEMENTS]
        slow = [s for s in top if s.mean_ms > rules.long_query_s * 1000]
        checks.append(
            Check(
                "slowest statements",
                not slow,
                "; ".join(s.describe() for s in top) or "pg_stat_statements holds none yet",
            )
        )
    sessions = facts.sessions
    if sessions is None:
        unread = facts.error("sessions")
        checks += [
            Check("long-running queries", None, unread),
            Check("long-running transactions", None, unread),
            Check("lock chains", None, unread),
        ]
    else:
        long_q = [
            s for s in sessions if s.state == "active" and (s.query_age_s or 0) > rules.long_query_s
        ]
        long_x = [s for s in sessions if (s.xact_age_s or 0) > rules.long_query_s]
        chains = lock_chains(sessions)
        by_pid = {s.pid: s for s in sessions}
        checks += [
            Check(
                "long-running queries",
                not long_q,
                "; ".join(s.describe() for s in long_q) or f"none over {rules.long_query_s:g} s",
            ),
            Check(
                "long-running transactions",
                not long_x,
                "; ".join(s.describe() for s in long_x) or f"none over {rules.long_query_s:g} s",
            ),
            Check(
                "lock chains",
                not chains,
                "; ".join(
                    f"{by_pid[head].describe() if head in by_pid else f'pid {head}'} blocks "
                    f"pid {', '.join(str(p) for p in waiters)}"
                    for head, waiters in chains.items()
                )
                or "no session waits on another's lock",
            ),
        ]
    checks.append(probe_check(facts.probe_ms, rules.probe_limit_ms, facts.error("probe")))
    targets = (*decision.auto_kill, *decision.ask, *decision.refused)
    checks.append(
        Check(
            "sessions to end",
            not targets,
            "; ".join(t.describe() for t in targets) or "none",
        )
    )
    return checks


def probe_check(
    probe_ms: float | None, limit_ms: float, error: str = "failed", item: str = "probe query"
) -> Check:
    """The probe query's time against its limit."""
    if probe_ms is None:
        return Check(item, None, error)
    return Check(
        item,
        probe_ms <= limit_ms,
        f"answered in {probe_ms:.1f} ms (limit {limit_ms:g} ms)",
    )


def recovery_checks(
    sessions: Sequence[Session] | None,
    ended: Iterable[tuple[int, str]],
    probe_ms: float | None,
    rules: Policy,
    p95_s: float | None,
    p95_limit_s: float,
    p95_why: str = "",
) -> list[Check]:
    """Verification after the terminations: the ended sessions gone, no lock chain left, the
    probe query under its limit, and the service's p95 (Prometheus) when it has data."""
    gone = set(ended)
    if sessions is None:
        return [Check("lock chains gone", None, "the sessions could not be read again")]
    alive = sorted(s.pid for s in sessions if s.key in gone)
    chains = lock_chains(sessions)
    checks = [
        Check(
            "terminated sessions gone",
            not alive,
            f"pid {', '.join(map(str, alive))} still there" if alive else f"{len(gone)} gone",
        ),
        Check(
            "lock chains gone",
            not chains,
            "; ".join(f"pid {h} blocks pid {', '.join(map(str, w))}" for h, w in chains.items())
            or "no session waits on another's lock",
        ),
        probe_check(probe_ms, rules.probe_limit_ms, item=PROBE_AFTER),
    ]
    checks.append(
        Check(
            "p95 latency (Prometheus)",
            None if p95_s is None else p95_s <= p95_limit_s,
            p95_why
            if p95_s is None
            else f"{p95_s * 1000:.0f} ms (limit {p95_limit_s * 1000:.0f} ms)",
        )
    )
    return checks


def recovered(checks: Sequence[Check]) -> bool:
    """Recovered only when the lock chains are gone, the probe answered in time, and no
    verification item failed (an unknown p95 does not block it)."""
    items = {c.item: c.passed for c in checks}
    return (
        items.get("lock chains gone") is True
        and items.get(PROBE_AFTER) is True
        and all(c.passed is not False for c in checks)
    )


def approval_markdown(database: str, targets: Sequence[Target], timeout_s: int) -> str:
    """The markdown above the approval form: what terminating each backend means."""
    lines = [
        f"### Terminate {len(targets)} backend(s) of {database}?",
        "",
        "Approving terminates each session below (`pg_terminate_backend`): its transaction is "
        "rolled back and its client disconnected. Rejecting (or no answer within "
        f"{timeout_s} s) changes nothing.",
        "",
        "| pid | role | state | why | query |",
        "|---|---|---|---|---|",
    ]
    for t in targets:
        s = t.session
        query = redact(s.query, 120).replace("|", "\\|").replace("`", "'")
        lines.append(f"| {s.pid} | {s.role} | {s.state or '-'} | {t.why} | `{query}` |")
    return "\n".join(lines) + "\n"
