"""Which schema migrations run, how, and whether they may: pure decisions on parsed SQL.

A migration is a plain SQL file; files run in name order and each is recorded in
``schema_migrations`` with its SHA-256. The plan says, per pending file, the lock each
statement takes, whether the file must run outside a transaction, and which linter
(squawk) findings block it. A finding blocks unless squawk's own ignore comment marks it
reviewed (``-- squawk-ignore rule`` on the line before, ``-- squawk-ignore-file rule``
anywhere) or the runner itself satisfies the rule (it sets ``lock_timeout`` and
``statement_timeout``). An applied file whose checksum changed is an error, never a re-run.

Pending files are applied in units (:func:`apply_units`): consecutive transactional files in
one transaction (all or none), a file that must run outside a transaction on its own. Such a
file commits statement by statement, so each statement must be safe to run again after a
partial failure: guarded with ``IF [NOT] EXISTS`` or repeatable (``not-rerunnable`` blocks
the plan otherwise, see :func:`decisions.sql_locks.rerun_problem`).

Files may declare what must hold after they ran, checked by the verify step::

    -- verify: accounts, accounts.note, index accounts_email_idx, absent accounts.legacy
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from decisions.sql_locks import (
    LockInfo,
    Statement,
    is_session_setting,
    is_txn_control,
    lock_for,
    rerun_problem,
    split_statements,
)
from opsflows.errors import ConfigurationError

#: squawk rules the runner satisfies itself: every migration runs with both timeouts set.
RUNNER_RULES = {"require-lock-timeout", "require-statement-timeout", "require-timeout-settings"}
TXN_CONTROL = "transaction-control: the runner wraps each file; remove BEGIN/COMMIT from it"


@dataclass(frozen=True)
class Expectation:
    """Something the schema must (or must not) contain once the migration ran."""

    kind: str  # "table" | "column" | "index"
    name: str  # lowercase; "accounts", "accounts.note", "public.accounts.note", "idx"
    present: bool = True

    def describe(self) -> str:
        return f"{'' if self.present else 'absent '}{self.kind} {self.name}"


@dataclass(frozen=True)
class Ignore:
    """A squawk ignore comment: rules marked reviewed for the next statement or the file."""

    line: int
    rules: frozenset[str]  # empty with whole_file means every rule
    whole_file: bool


@dataclass(frozen=True)
class Migration:
    """A parsed migration file."""

    name: str
    checksum: str
    statements: tuple[Statement, ...]
    expectations: tuple[Expectation, ...] = ()
    ignores: tuple[Ignore, ...] = ()


@dataclass(frozen=True)
class Finding:
    """One squawk finding; ``line`` is 1-based."""

    file: str
    line: int
    rule: str
    message: str
    level: str = "Warning"
    help: str = ""


@dataclass(frozen=True)
class JudgedFinding:
    finding: Finding
    verdict: str  # "blocks" | "reviewed" | "runner"


@dataclass(frozen=True)
class Step:
    statement: Statement
    lock: LockInfo


@dataclass(frozen=True)
class MigrationPlan:
    """How one pending file will run and what stands in its way."""

    migration: Migration
    transactional: bool
    steps: tuple[Step, ...]
    findings: tuple[JudgedFinding, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def blocking(self) -> tuple[str, ...]:
        lint = [
            f"{self.migration.name}:{j.finding.line} {j.finding.rule}: {j.finding.message}"
            for j in self.findings
            if j.verdict == "blocks"
        ]
        return tuple(f"{self.migration.name}: {p}" for p in self.problems) + tuple(lint)


@dataclass(frozen=True)
class ApplyUnit:
    """Pending files applied together: all of them or none.

    Consecutive transactional files share one transaction; a file that must run outside a
    transaction is a unit of its own (its statements commit one by one).
    """

    files: tuple[MigrationPlan, ...]

    @property
    def transactional(self) -> bool:
        return self.files[0].transactional

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.migration.name for f in self.files)


def apply_units(pending: Sequence[MigrationPlan]) -> tuple[ApplyUnit, ...]:
    """Group pending files (in order) into units: runs of transactional files, and each
    file that runs outside a transaction on its own."""
    units: list[list[MigrationPlan]] = []
    for step in pending:
        if step.transactional and units and units[-1][-1].transactional:
            units[-1].append(step)
        else:
            units.append([step])
    return tuple(ApplyUnit(tuple(u)) for u in units)


@dataclass(frozen=True)
class Applied:
    """A row of ``schema_migrations``."""

    name: str
    checksum: str


@dataclass(frozen=True)
class Plan:
    """Pending migrations in order; ``errors`` refuse the run, ``blocking`` needs a fix."""

    applied: tuple[str, ...]
    pending: tuple[MigrationPlan, ...]
    errors: tuple[str, ...] = ()
    server_version: str | None = None

    @property
    def blocking(self) -> tuple[str, ...]:
        return tuple(reason for p in self.pending for reason in p.blocking)

    @property
    def blocked(self) -> bool:
        return bool(self.errors or self.blocking)

    @property
    def units(self) -> tuple[ApplyUnit, ...]:
        """How the pending files are applied (:func:`apply_units`)."""
        return apply_units(self.pending)


@dataclass(frozen=True)
class ApplyPolicy:
    """Timeouts and lock-timeout retries for applying migrations."""

    lock_timeout_s: float = 5.0
    statement_timeout_s: float = 900.0
    lock_retries: int = 4
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.lock_timeout_s <= 600:
            raise ConfigurationError("lock_timeout_s must be in (0, 600] seconds")
        if not self.lock_timeout_s <= self.statement_timeout_s <= 86400:
            raise ConfigurationError("statement_timeout_s must be in [lock_timeout_s, 86400]")
        if not 0 <= self.lock_retries <= 20:
            raise ConfigurationError("lock_retries must be between 0 and 20")
        if not 0 <= self.backoff_base_s <= self.backoff_cap_s:
            raise ConfigurationError("need 0 <= backoff_base_s <= backoff_cap_s")

    def delays(self) -> tuple[float, ...]:
        """Waits before each retry: exponential from ``backoff_base_s``, capped."""
        return tuple(
            min(self.backoff_cap_s, self.backoff_base_s * 2**i) for i in range(self.lock_retries)
        )


# -- parsing ------------------------------------------------------------------------------

_IGNORE = re.compile(r"^\s*(?:--|/\*)\s*squawk-ignore(-file)?(?=\s|$|\*/)(.*?)(?:\*/\s*)?$")
_VERIFY = re.compile(r"^\s*--\s*verify:\s*(.+?)\s*$", re.IGNORECASE)
_KINDS = ("table", "column", "index")
_NAME = re.compile(r"^[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*){0,2}$")


def parse_ignores(text: str) -> tuple[Ignore, ...]:
    """squawk ignore comments (``-- squawk-ignore a, b -- why``) with their lines."""
    found = []
    for number, raw in enumerate(text.splitlines(), start=1):
        m = _IGNORE.match(raw)
        if m:
            names = m.group(2).split("--")[0]
            rules = frozenset(r.strip() for r in names.split(",") if r.strip())
            found.append(Ignore(number, rules, whole_file=bool(m.group(1))))
    return tuple(found)


def parse_expectations(text: str, name: str = "") -> tuple[Expectation, ...]:
    """``-- verify:`` declarations; a malformed one is a ConfigurationError naming the line."""
    found: list[Expectation] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        m = _VERIFY.match(raw)
        if not m:
            continue
        for item in (part.strip().lower() for part in m.group(1).split(",")):
            words = item.split()
            present = not (words and words[0] == "absent")
            words = words[0 if present else 1 :]
            kind = words.pop(0) if len(words) == 2 and words[0] in _KINDS else ""
            if len(words) != 1 or not _NAME.match(words[0]):
                raise ConfigurationError(
                    f"{name}:{number}: cannot read verify item {item!r}",
                    hint="write `-- verify: table`, `table.column`, `index name` or `absent x`",
                )
            target = words[0]
            kind = kind or ("column" if "." in target else "table")
            found.append(Expectation(kind, target, present))
    return tuple(found)


def parse_migration(name: str, data: bytes) -> Migration:
    """Parse one migration file; empty or undecodable files are rejected."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"migration {name} is not UTF-8 text") from exc
    statements = split_statements(text)
    if not any(s.code for s in statements):
        raise ConfigurationError(f"migration {name} contains no SQL statement")
    return Migration(
        name=name,
        checksum=hashlib.sha256(data).hexdigest(),
        statements=tuple(s for s in statements if s.code),
        expectations=parse_expectations(text, name),
        ignores=parse_ignores(text),
    )


def runs_in_transaction(migration: Migration, server_version_num: int | None = None) -> bool:
    """False when any statement cannot run inside a transaction block."""
    return not any(
        lock_for(s, server_version_num).outside_transaction for s in migration.statements
    )


# -- the plan -----------------------------------------------------------------------------


def judge(finding: Finding, migration: Migration) -> JudgedFinding:
    """Runner-satisfied, reviewed by a squawk ignore comment, or blocking."""
    if finding.rule in RUNNER_RULES:
        return JudgedFinding(finding, "runner")
    starts = {finding.line}
    starts |= {s.line for s in migration.statements if s.line <= finding.line <= s.end_line}
    for ig in migration.ignores:
        covers = finding.rule in ig.rules or (ig.whole_file and not ig.rules)
        if covers and (ig.whole_file or ig.line + 1 in starts):
            return JudgedFinding(finding, "reviewed")
    return JudgedFinding(finding, "blocks")


def plan_migration(
    migration: Migration, findings: Iterable[Finding] = (), server_version_num: int | None = None
) -> MigrationPlan:
    """Locks, transaction mode, judged findings and structural problems of one file."""
    steps = tuple(Step(s, lock_for(s, server_version_num)) for s in migration.statements)
    transactional = not any(step.lock.outside_transaction for step in steps)
    problems: list[str] = []
    control = [s for s in migration.statements if is_txn_control(s)]
    if control:
        problems.append(f"line {control[0].line}: {TXN_CONTROL}")
    if not transactional:
        mixed = [
            st.statement
            for st in steps
            if not st.lock.outside_transaction and not is_session_setting(st.statement)
        ]
        if mixed:
            problems.append(
                f"line {mixed[0].line}: mixed-transaction-modes: statements that must run outside"
                " a transaction"
                " next to statements that should run inside one; split them into separate files"
            )
        changes = [st.statement for st in steps if not is_session_setting(st.statement)]
        for st in steps:
            if st.lock.outside_transaction:
                problem = rerun_problem(st.statement, alone=len(changes) == 1)
                if problem:
                    problems.append(f"line {st.statement.line}: not-rerunnable: {problem}")
    judged = tuple(judge(f, migration) for f in findings if f.file == migration.name)
    return MigrationPlan(migration, transactional, steps, judged, tuple(problems))


def pending(migrations: Sequence[Migration], applied: Iterable[Applied]) -> tuple[Migration, ...]:
    """Files not yet recorded in ``schema_migrations``, in name order."""
    done = {a.name for a in applied}
    return tuple(sorted((m for m in migrations if m.name not in done), key=lambda m: m.name))


def make_plan(
    migrations: Sequence[Migration],
    applied: Sequence[Applied],
    findings: Sequence[Finding] = (),
    server_version: str | None = None,
    server_version_num: int | None = None,
) -> Plan:
    """The whole plan: what is applied, what is pending and how, and what refuses the run."""
    on_disk = {m.name: m for m in migrations}
    errors: list[str] = []
    for a in sorted(applied, key=lambda a: a.name):
        m = on_disk.get(a.name)
        if m is None:
            errors.append(
                f"{a.name} is recorded as applied but missing from the directory"
                " (wrong directory or git ref?)"
            )
        elif m.checksum != a.checksum:
            errors.append(
                f"{a.name} was edited after it was applied (recorded sha256 {a.checksum[:12]},"
                f" file {m.checksum[:12]}); restore the file and write a new migration instead"
            )
    todo = pending(migrations, applied)
    latest = max((a.name for a in applied), default=None)
    errors += [
        f"{m.name} sorts before the already applied {latest}; rename it so it runs last"
        for m in todo
        if latest is not None and m.name < latest
    ]
    plans = tuple(plan_migration(m, findings, server_version_num) for m in todo)
    applied_names = tuple(sorted(a.name for a in applied))
    return Plan(applied_names, plans, tuple(errors), server_version)
