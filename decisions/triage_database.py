"""Pure decisions of the database-slow runbook: which backends to end, which need a person,
which are never touched, and whether the database recovered.

RUNBOOK.md's "Database is slow": look at the host's CPU and memory, the slowest statements
(``pg_stat_statements``), long-running queries and transactions and the lock chains
(``pg_blocking_pids``); then end what causes it. A session is a *culprit* when it

* heads a lock chain (it blocks others and waits on nobody),
* is idle in a transaction for longer than the auto-kill policy, or
* runs one statement for longer than ``long_query_s`` without waiting on a lock
  (a session waiting on a lock is a victim: its blocker is the culprit).

What happens to a culprit (:func:`classify`)::

    our own connection, an opsflows runbook's session,    refuse: never terminated, never
    a superuser or replication role, a non-client process    offered; recorded and escalated
    idle in transaction > the policy's N                  auto-kill (no person asked)
    anything else                                         ask a person (typed form, timeout)

Restarting the database always needs a person; the runbook only recommends it
(``decisions.triage_database_checks.restart_recommendation``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from decisions.records import Record
from opsflows.errors import ConfigurationError

#: The ``application_name`` of every opsflows connection (``PostgresTarget.conninfo``): a
#: runbook's session (a migration, a backup check, this run) is never ended by this runbook.
OPSFLOWS_APPLICATION = "opsflows"
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")
CLIENT_BACKEND = "client backend"
#: How many of the slowest statements the checklist shows.
TOP_STATEMENTS = 3
#: Host CPU and memory above these shares fail their checklist items.
HOST_CPU_LIMIT = 0.9
HOST_MEMORY_LIMIT = 0.9
MAX_MINUTES = 24 * 60.0
#: The verification's probe item (the diagnosis has its own "probe query").
PROBE_AFTER = "probe query after"
#: A string literal in a query text (it may hold a password: ``ALTER ROLE ... PASSWORD '...'``).
_LITERAL = re.compile(r"'(?:[^']|'')*'?")


def redact(query: str, width: int = 80) -> str:
    """A query text on one line, cut to ``width``, every string literal replaced by ``'?'``."""
    return _LITERAL.sub("'?'", " ".join(query.split()))[:width]


@dataclass(frozen=True)
class Session(Record):
    """One backend of the database, as ``pg_stat_activity`` shows it (ages in seconds)."""

    pid: int
    #: With ``pid``, the backend's identity: a pid the server reuses is another session.
    backend_start: datetime
    role: str
    superuser: bool
    replication: bool
    backend_type: str
    state: str | None
    application: str
    xact_age_s: float | None
    query_age_s: float | None
    state_age_s: float | None
    wait: str | None
    query: str
    blocked_by: tuple[int, ...] = ()
    ours: bool = False

    @property
    def key(self) -> tuple[int, str]:
        return self.pid, self.backend_start.isoformat()

    @property
    def idle_in_transaction(self) -> bool:
        return self.state in IDLE_IN_TRANSACTION

    def describe(self) -> str:
        parts = [f"pid {self.pid}", self.role or "?", self.state or self.backend_type]
        if self.application:
            parts.append(f"app {self.application!r}")
        if self.xact_age_s is not None:
            parts.append(f"transaction {self.xact_age_s:.0f} s")
        if self.state == "active" and self.query_age_s is not None:
            parts.append(f"query {self.query_age_s:.0f} s")
        if self.idle_in_transaction and self.state_age_s is not None:
            parts.append(f"idle {self.state_age_s:.0f} s")
        text = ", ".join(parts)
        query = redact(self.query)
        return f"{text}: {query}" if query else text


@dataclass(frozen=True)
class Statement(Record):
    """One row of ``pg_stat_statements``: how often a statement ran and how long it takes."""

    calls: int
    mean_ms: float
    total_ms: float
    query: str

    def describe(self) -> str:
        query = redact(self.query)
        return f"{self.mean_ms:.1f} ms mean x {self.calls} calls: {query}"


@dataclass(frozen=True)
class Policy(Record):
    """The runbook's limits (flow parameters, validated by :func:`policy`)."""

    idle_in_transaction_kill_s: float
    long_query_s: float
    probe_limit_ms: float


def policy(
    idle_in_transaction_kill_min: float, long_query_s: float, probe_limit_ms: float
) -> Policy:
    """The policy, validated: every limit positive (and a day at most for the kill age).

    Raises:
        ConfigurationError: naming the bad value.
    """
    if not 0 < idle_in_transaction_kill_min <= MAX_MINUTES:
        raise ConfigurationError(
            f"idle_in_transaction_kill_min must be in (0, {MAX_MINUTES:g}], got "
            f"{idle_in_transaction_kill_min}",
            hint="sessions idle in a transaction longer than this many minutes are "
            "terminated without asking (5 by default)",
        )
    if not 0 < long_query_s <= MAX_MINUTES * 60:
        raise ConfigurationError(
            f"long_query_s must be in (0, {MAX_MINUTES * 60:g}], got {long_query_s}",
            hint="a statement running longer than this many seconds counts as long-running",
        )
    if not 0 < probe_limit_ms <= 60_000:
        raise ConfigurationError(
            f"probe_limit_ms must be in (0, 60000], got {probe_limit_ms}",
            hint="the probe query's time that counts as the database answering normally",
        )
    return Policy(idle_in_transaction_kill_min * 60.0, long_query_s, probe_limit_ms)


def lock_chains(sessions: Iterable[Session]) -> dict[int, tuple[int, ...]]:
    """Each lock chain's head (a session that blocks others and waits on nobody) and every
    session waiting on it, directly or down the chain (``pg_blocking_pids``)."""
    blocked = {s.pid: s.blocked_by for s in sessions if s.blocked_by}
    chains: dict[int, set[int]] = {}
    for waiter in blocked:
        seen: set[int] = set()
        todo = list(blocked[waiter])
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            above = blocked.get(pid)
            if above:
                todo.extend(above)
            else:
                chains.setdefault(pid, set()).add(waiter)
    return {head: tuple(sorted(waiters)) for head, waiters in sorted(chains.items())}


def untouchable(session: Session) -> str | None:
    """Why the runbook never terminates ``session`` (None: it may, by policy or approval)."""
    if session.ours:
        return "our own connection"
    if session.superuser:
        return f"a superuser session (role {session.role})"
    if session.replication or session.backend_type == "walsender":
        return f"a replication session (role {session.role})"
    if session.backend_type != CLIENT_BACKEND:
        return f"a {session.backend_type} process, not a client session"
    if session.application == OPSFLOWS_APPLICATION:
        return "a session of an opsflows runbook (its own run ends it)"
    return None


Verdict = Literal["auto-kill", "ask", "refuse"]


@dataclass(frozen=True)
class Target(Record):
    """A culprit session, why it is one, and what the runbook may do to it."""

    session: Session
    why: str
    verdict: Verdict
    rule: str

    def describe(self) -> str:
        return f"{self.session.describe()} -- {self.why}; {self.verdict}: {self.rule}"


def culprit_reasons(
    session: Session, chains: Mapping[int, Sequence[int]], rules: Policy
) -> list[str]:
    """Why ``session`` slows the database down (empty: it does not)."""
    why = []
    waiters = chains.get(session.pid)
    if waiters:
        pids = ", ".join(str(p) for p in waiters)
        why.append(f"blocks {len(waiters)} session(s) (pid {pids})")
    idle = session.state_age_s or 0.0
    if session.idle_in_transaction and idle > rules.idle_in_transaction_kill_s:
        why.append(f"idle in transaction for {idle:.0f} s")
    age = session.query_age_s or 0.0
    if session.state == "active" and not session.blocked_by and age > rules.long_query_s:
        why.append(f"one statement running for {age:.0f} s")
    return why


def classify(sessions: Sequence[Session], rules: Policy) -> tuple[Target, ...]:
    """Every culprit with its verdict (see the module docstring), lock chain heads first."""
    chains = lock_chains(sessions)
    out: list[Target] = []
    for s in sessions:
        why = culprit_reasons(s, chains, rules)
        if not why:
            continue
        reason = "; ".join(why)
        refuse = untouchable(s)
        idle = s.state_age_s or 0.0
        limit = rules.idle_in_transaction_kill_s
        if refuse is not None:
            out.append(Target(s, reason, "refuse", f"{refuse}: never terminated by the runbook"))
        elif s.idle_in_transaction and idle > limit:
            out.append(
                Target(
                    s,
                    reason,
                    "auto-kill",
                    f"idle in transaction {idle:.0f} s > {limit:g} s (the auto-kill policy)",
                )
            )
        else:
            out.append(Target(s, reason, "ask", "outside the auto-kill policy: a person decides"))
    return tuple(sorted(out, key=lambda t: (t.session.pid not in chains, t.session.pid)))


@dataclass(frozen=True)
class DatabaseFacts(Record):
    """What the diagnosis saw; ``None`` means "could not be read"."""

    environment: str
    database: str
    sessions: tuple[Session, ...] | None
    statements: tuple[Statement, ...] | None
    probe_ms: float | None
    cpu: float | None = None
    memory: float | None = None
    #: Why a reading is missing (item -> error), for the checklist's evidence.
    errors: tuple[tuple[str, str], ...] = ()

    def error(self, item: str) -> str:
        return dict(self.errors).get(item, "not read")


Action = Literal["none", "terminate", "escalate"]


@dataclass(frozen=True)
class DatabaseDecision(Record):
    """What the runbook does, and to whom."""

    action: Action
    reason: str
    auto_kill: tuple[Target, ...] = ()
    ask: tuple[Target, ...] = ()
    refused: tuple[Target, ...] = ()

    @property
    def keys(self) -> set[tuple[int, str]]:
        return {t.session.key for t in (*self.auto_kill, *self.ask)}


def decide_database_slow(facts: DatabaseFacts, rules: Policy) -> DatabaseDecision:
    """Terminate culprits (by policy, or after an approval), escalate, or nothing."""
    if facts.sessions is None:
        return DatabaseDecision(
            "escalate",
            f"the sessions of {facts.database} could not be read: {facts.error('sessions')}",
        )
    targets = classify(facts.sessions, rules)
    auto = tuple(t for t in targets if t.verdict == "auto-kill")
    ask = tuple(t for t in targets if t.verdict == "ask")
    refused = tuple(t for t in targets if t.verdict == "refuse")
    if auto or ask:
        pids = ", ".join(str(t.session.pid) for t in (*auto, *ask))
        reason = f"terminate pid {pids}"
        if auto:
            reason += f" ({len(auto)} by the auto-kill policy)"
        if ask:
            reason += f" ({len(ask)} after a person approves)"
        if refused:
            reason += f"; refused: {', '.join(str(t.session.pid) for t in refused)}"
        return DatabaseDecision("terminate", reason, auto, ask, refused)
    if refused:
        who = "; ".join(f"pid {t.session.pid}: {t.rule}" for t in refused)
        return DatabaseDecision(
            "escalate",
            f"the sessions slowing {facts.database} are not the runbook's to end ({who})",
            refused=refused,
        )
    if facts.probe_ms is None:
        return DatabaseDecision(
            "escalate", f"the probe query on {facts.database} failed: {facts.error('probe')}"
        )
    if facts.probe_ms > rules.probe_limit_ms:
        return DatabaseDecision(
            "escalate",
            f"the probe query took {facts.probe_ms:.0f} ms (limit {rules.probe_limit_ms:g} ms) "
            "and no session is to blame",
        )
    return DatabaseDecision(
        "none",
        f"no lock chain, no long-running query or transaction, and the probe query took "
        f"{facts.probe_ms:.1f} ms (limit {rules.probe_limit_ms:g} ms): nothing to end",
    )
