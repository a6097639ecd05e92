"""SQL text of migrations: statements split safely, and the lock each statement takes.

The lock table follows the PostgreSQL manual ("Explicit Locking", and each command's page):
the mode is the heaviest one taken on an existing table; ``outside_transaction`` marks the
statements PostgreSQL refuses inside a transaction block.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from opsflows.errors import scrub_statement

SUE = "SHARE UPDATE EXCLUSIVE"
AE = "ACCESS EXCLUSIVE"


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a file: its text, its comment-free text, its line span (1-based)."""

    sql: str
    code: str
    line: int
    end_line: int

    @property
    def shown(self) -> str:
        """The whole statement on one line, safe to show (credential literals masked)."""
        return scrub_statement(" ".join(self.code.split()))

    @property
    def head(self) -> str:
        """:attr:`shown`, cut to 72 characters."""
        text = self.shown
        return text if len(text) <= 72 else text[:71] + "…"


@dataclass(frozen=True)
class LockInfo:
    """The heaviest table lock a statement takes and what it makes wait."""

    lock: str
    blocks: str
    outside_transaction: bool = False


# -- splitting ---------------------------------------------------------------------------

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def split_statements(text: str) -> tuple[Statement, ...]:
    """Split SQL on top-level semicolons, respecting quotes, dollar quotes and comments."""
    out: list[Statement] = []
    code: list[str] = []
    start = -1
    start_line = line = 1
    i, n = 0, len(text)

    def finish(end: int) -> None:
        nonlocal start
        if start >= 0:
            sql = text[start:end].strip()
            out.append(Statement(sql, "".join(code).strip(), start_line, line))
        start = -1
        code.clear()

    while i < n:
        ch = text[i]
        if ch == "-" and text.startswith("--", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if ch == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            line += text.count("\n", i, j)
            code.append(" ")
            i = j
            continue
        if ch == "\n":
            line += 1
        if ch == ";":
            finish(i)
            i += 1
            continue
        if start < 0 and not ch.isspace():
            start, start_line = i, line
        j = _quoted_end(text, i)
        if j > i + 1 or ch in "'\"":
            line += text.count("\n", i + 1, j)
            code.append(text[i:j])
            i = j
            continue
        code.append(ch)
        i += 1
    finish(n)
    return tuple(out)


def _quoted_end(text: str, i: int) -> int:
    """End index of the quoted token starting at ``i``, or ``i + 1`` when none starts there."""
    ch = text[i]
    if ch in "'\"":
        escapes = ch == "'" and i > 0 and text[i - 1] in "eE" and not _ident(text, i - 2)
        j = i + 1
        while j < len(text):
            if escapes and text[j] == "\\":
                j += 2
                continue
            if text[j] == ch:
                if text.startswith(ch * 2, j):
                    j += 2
                    continue
                return j + 1
            j += 1
        return len(text)
    if ch == "$" and not _ident(text, i - 1):
        m = _DOLLAR.match(text, i)
        if m:
            close = text.find(m.group(0), m.end())
            return len(text) if close < 0 else close + len(m.group(0))
    return i + 1


def _ident(text: str, i: int) -> bool:
    return i >= 0 and (text[i].isalnum() or text[i] in "_$")


# -- locks -------------------------------------------------------------------------------

_RW, _W, _DDL = "reads and writes", "writes", "schema changes and VACUUM"
_NONE = LockInfo("none", "nothing")
_RULES: tuple[tuple[str, LockInfo], ...] = (
    (r"(BEGIN|START TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE|PREPARE)\b", _NONE),
    (r"(SET|RESET|SHOW)\b", _NONE),
    (r"CREATE (UNIQUE )?INDEX CONCURRENTLY\b", LockInfo(SUE, _DDL, True)),
    (r"CREATE (UNIQUE )?INDEX\b", LockInfo("SHARE", _W)),
    (r"DROP INDEX CONCURRENTLY\b", LockInfo(SUE, _DDL, True)),
    (r"REINDEX\b.*\bCONCURRENTLY\b", LockInfo(SUE, _DDL, True)),
    (r"REINDEX (\(.*?\) )?(SCHEMA|DATABASE|SYSTEM)\b", LockInfo(AE, _RW, True)),
    (r"REINDEX\b", LockInfo(f"{AE} on the index, SHARE on the table", f"{_W} (and index reads)")),
    (r"VACUUM\b.*\bFULL\b", LockInfo(AE, _RW, True)),
    (r"VACUUM\b", LockInfo(SUE, _DDL, True)),
    (r"(ANALYZE|COMMENT ON)\b", LockInfo(SUE, _DDL)),
    (r"(CREATE|DROP|ALTER) (DATABASE|TABLESPACE)\b|ALTER SYSTEM\b", LockInfo("none", "n/a", True)),
    (r"REFRESH MATERIALIZED VIEW CONCURRENTLY\b", LockInfo("EXCLUSIVE", _W)),
    (r"ALTER TABLE\b.*\bVALIDATE CONSTRAINT\b", LockInfo(SUE, _DDL)),
    (r"ALTER TABLE\b.*\bDETACH PARTITION\b.*\bCONCURRENTLY\b", LockInfo(SUE, _DDL, True)),
    (
        r"ALTER TABLE\b[^,]*\bADD (CONSTRAINT \S+ )?FOREIGN KEY\b",
        LockInfo("SHARE ROW EXCLUSIVE on both tables", _W),
    ),
    (r"ALTER TABLE\b.*\b(SET STATISTICS|ATTACH PARTITION|CLUSTER ON)\b", LockInfo(SUE, _DDL)),
    (r"ALTER TABLE\b.*\b(ENABLE|DISABLE) TRIGGER\b", LockInfo("SHARE ROW EXCLUSIVE", _W)),
    (r"ALTER INDEX\b.*\bRENAME\b", LockInfo(SUE, _DDL)),
    (r"ALTER TYPE\b.*\bADD VALUE\b", LockInfo("none on tables", "nothing")),
    (r"(CREATE|CREATE OR REPLACE) (CONSTRAINT )?TRIGGER\b", LockInfo("SHARE ROW EXCLUSIVE", _W)),
    (r"CREATE OR REPLACE (VIEW|RULE)\b", LockInfo(f"{AE} on the view", "reads of the view")),
    (
        r"CREATE (UNLOGGED )?TABLE\b.*\bREFERENCES\b",
        LockInfo("SHARE ROW EXCLUSIVE on the referenced table", "writes to the referenced table"),
    ),
    (r"CREATE\b", LockInfo("none (new object)", "nothing")),
    (r"(ALTER|DROP|TRUNCATE|CLUSTER|REFRESH)\b", LockInfo(AE, _RW)),
    (r"LOCK\b", LockInfo(AE, _RW)),
    (r"(INSERT|UPDATE|DELETE|MERGE)\b", LockInfo("ROW EXCLUSIVE", "writers of the same rows")),
    (r"(SELECT|WITH|VALUES|TABLE)\b", LockInfo("ACCESS SHARE", "nothing")),
    (r"(GRANT|REVOKE)\b", LockInfo("none on data", "nothing")),
)
_COMPILED = tuple((re.compile(p), info) for p, info in _RULES)
_LOCK_MODE = re.compile(r"^LOCK\b.*\bIN ([A-Z ]+?) MODE\b")


def lock_for(statement: Statement | str, server_version_num: int | None = None) -> LockInfo:
    """The lock a statement takes and whether it can only run outside a transaction."""
    code = statement.code if isinstance(statement, Statement) else statement
    norm = " ".join(code.upper().split())
    mode = _LOCK_MODE.match(norm)
    if mode:
        return LockInfo(mode.group(1), "depends on the mode")
    if re.match(r"ALTER TYPE\b.*\bADD VALUE\b", norm):
        old = server_version_num is not None and server_version_num < 120000
        return LockInfo("none on tables", "nothing", outside_transaction=old)
    for pattern, info in _COMPILED:
        if pattern.match(norm):
            return info
    return LockInfo("unknown", "unknown")


def is_txn_control(statement: Statement) -> bool:
    return bool(_COMPILED[0][0].match(" ".join(statement.code.upper().split())))


def is_session_setting(statement: Statement) -> bool:
    return bool(_COMPILED[1][0].match(" ".join(statement.code.upper().split())))


_CIC_NAME = re.compile(
    r"^CREATE (?:UNIQUE )?INDEX CONCURRENTLY (?:IF NOT EXISTS )?(\"[^\"]+\"|[\w$.]+) ON\b",
    re.IGNORECASE,
)


_DIC_NAME = re.compile(
    r"^DROP INDEX CONCURRENTLY (?:IF EXISTS )?(\"[^\"]+\"|[\w$.]+)", re.IGNORECASE
)


def concurrent_index_change(statement: Statement) -> tuple[str, str] | None:
    """``("create" | "drop", index name as written)`` for a CONCURRENTLY build or drop."""
    code = " ".join(statement.code.split())
    for verb, pattern in (("create", _CIC_NAME), ("drop", _DIC_NAME)):
        m = pattern.match(code)
        if m:
            return verb, m.group(1)
    return None


def concurrent_index_names(statements: Iterable[Statement]) -> tuple[str, ...]:
    """Indexes a file builds CONCURRENTLY (a killed build leaves them INVALID)."""
    names = []
    for s in statements:
        m = _CIC_NAME.match(" ".join(s.code.split()))
        if m:
            names.append(m.group(1))
    return tuple(names)


# -- re-running a statement that runs outside a transaction -------------------------------

#: (pattern, guard, how the guarded statement starts) for statements that need one.
_GUARDED = (
    (
        re.compile(r"^CREATE (UNIQUE )?INDEX CONCURRENTLY\b(?! IF NOT EXISTS\b)"),
        "IF NOT EXISTS",
        "CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS <name> ON …",
    ),
    (
        re.compile(r"^DROP INDEX CONCURRENTLY\b(?! IF EXISTS\b)"),
        "IF EXISTS",
        "DROP INDEX CONCURRENTLY IF EXISTS <name>",
    ),
    (
        re.compile(r"^DROP (DATABASE|TABLESPACE)\b(?! IF EXISTS\b)"),
        "IF EXISTS",
        "DROP DATABASE|TABLESPACE IF EXISTS <name>",
    ),
    (
        re.compile(r"^ALTER TYPE\b.*\bADD VALUE\b(?! IF NOT EXISTS\b)"),
        "IF NOT EXISTS",
        "ALTER TYPE <name> ADD VALUE IF NOT EXISTS …",
    ),
)
#: Statements that may simply run again: they rebuild or reset what they touch.
_REPEATABLE = re.compile(
    r"^(VACUUM|REINDEX|ALTER SYSTEM|CREATE (UNIQUE )?INDEX CONCURRENTLY|DROP INDEX CONCURRENTLY"
    r"|DROP (DATABASE|TABLESPACE)|ALTER TYPE)\b"
)


def rerun_problem(statement: Statement, *, alone: bool) -> str | None:
    """Why re-running ``statement`` (outside a transaction) after a partial failure is unsafe.

    A file that runs outside a transaction commits statement by statement; when one fails,
    the ones before it stay and the next run executes the whole file again. That is safe
    only when each statement is guarded (``CREATE INDEX CONCURRENTLY IF NOT EXISTS``,
    ``DROP INDEX CONCURRENTLY IF EXISTS``) or repeatable (``VACUUM``, ``REINDEX``). A
    statement that can be neither (``DETACH PARTITION … CONCURRENTLY``, ``CREATE DATABASE``)
    is accepted only ``alone`` in its file: then a failed run committed nothing before it.
    None when the statement is safe.
    """
    norm = " ".join(statement.code.upper().split())
    for pattern, guard, fix in _GUARDED:
        if pattern.match(norm):
            return (
                f"`{statement.head}` runs outside a transaction and is not guarded with"
                f" {guard}: after a partial failure the re-run would fail on it; write `{fix}`"
            )
    if _REPEATABLE.match(norm) or alone:
        return None
    return (
        f"`{statement.head}` runs outside a transaction and cannot be guarded with IF [NOT]"
        " EXISTS: after a partial failure of its file the re-run would fail on it; move it"
        " to a file of its own"
    )
