"""The one error tree of opsflows.

Vendor errors (``botocore.exceptions.ClientError``, ``kubernetes.client.ApiException``,
``psycopg.Error``, ``httpx.HTTPError``) are translated exactly once, at the task boundary
(see ``tasks/``), and chained with ``raise ... from exc``. Everything above the tasks sees
only these classes::

    OpsError                      root; ``hint`` says what to do next
    ├── PermanentError            retrying cannot help
    │   ├── ConfigurationError    bad input or a missing/invalid block, caught before side effects
    │   ├── AuthenticationError   a credential was refused (wrong password, bad keys)
    │   ├── NotFoundError         a named resource does not exist (404, missing bucket/secret/db)
    │   ├── ConflictError         a stale update lost a race (409); re-read and decide again
    │   │   └── ChangeSlotLost    a change lost its change slot's lease; it stopped at a safe point
    │   ├── GateRejected          a gate or a person said no (promotion, approval, lint)
    │   │   └── ApprovalTimedOut  nobody answered an approval in time
    │   ├── VerificationFailed    a check ran and the result is wrong (checksum, health, row counts)
    │   ├── BackupMissing         no complete backup satisfies the request
    │   └── TimedOut              a bounded wait ran out (a step past its deadline)
    └── TransientError            retrying after a delay may help
        ├── ServiceUnavailable    connection refused/reset, timeouts, 5xx
        │   └── Stalled           a stream or a child process made no progress within its bound
        └── Throttled             the service asked us to slow down (429, SlowDown, lock timeout)

Messages never carry secret values: vendor messages are truncated and scrubbed by
:func:`scrub` before they are embedded.
"""

from __future__ import annotations

import re

_MAX_VENDOR_TEXT = 300
_SECRETISH = re.compile(
    r"(?i)(password|passwd|secret|token|authorization|signature|credential)([\"'\s:=]+)([^\s\"',;&]+)"
)
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s]+:)([^@\s]+)(@)")


def scrub(text: str, *secrets: str) -> str:
    """Return ``text`` truncated, with known secret values and secret-looking fields masked."""
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    text = _SECRETISH.sub(r"\1\2***", text)
    if len(text) > _MAX_VENDOR_TEXT:
        text = text[:_MAX_VENDOR_TEXT] + "…"
    return text


#: A statement that names a credential: every string literal in it may hold one.
_SQL_SECRET_WORD = re.compile(r"(?i)(password|passwd|secret|token|credential)")
#: Double-quoted identifiers (kept), E'' strings, standard strings (also unterminated ones),
#: dollar-quoted strings.
_SQL_QUOTED = re.compile(
    r"""(?s)"(?:[^"]|"")*"?"""
    r"""|(?<![\w$])[eE]'(?:[^'\\]|''|\\.)*'?"""
    r"""|'(?:[^']|'')*'?"""
    r"""|(?<![\w$])\$([A-Za-z_][A-Za-z0-9_]*|)\$.*?(?:\$\1\$|$)"""
)


def _literals(sql: str) -> list[re.Match[str]]:
    if not _SQL_SECRET_WORD.search(sql):
        return []
    return [m for m in _SQL_QUOTED.finditer(sql) if not m.group(0).startswith('"')]


def scrub_statement(sql: str) -> str:
    """SQL text safe to show: a statement that names a credential has every literal masked.

    ``CREATE ROLE app LOGIN PASSWORD 'x'``, ``ALTER USER app PASSWORD 'x'``, a user mapping's
    ``OPTIONS (password 'x')`` or a connection string in a literal keep their shape with
    ``'***'`` for each literal; a URL's password is masked anywhere. Not truncated.
    """
    out, last = [], 0
    for m in _literals(sql):
        out += [sql[last : m.start()], "'***'"]
        last = m.end()
    return _URL_PASSWORD.sub(r"\1***\3", "".join(out) + sql[last:])


def statement_secrets(sql: str) -> tuple[str, ...]:
    """The literal values :func:`scrub_statement` masks, to pass to :func:`scrub` when a
    server's message about the statement might quote one."""
    values = []
    for m in _literals(sql):
        text = m.group(0)
        body = text.split("$", 2)[-1].rsplit("$", 2)[0] if text.startswith("$") else text
        body = body.lstrip("eE").strip("'")
        if len(body) >= 3:
            values.append(body)
    return tuple(values)


class OpsError(Exception):
    """Root of every error opsflows raises on purpose."""

    transient: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} — {hint}" if hint else message)


class PermanentError(OpsError):
    """Retrying cannot help: the input, the state or a decision is wrong."""


class ConfigurationError(PermanentError):
    """Bad input or configuration, detected before any side effect."""


class AuthenticationError(PermanentError):
    """A credential was refused by the service."""


class NotFoundError(PermanentError):
    """A named resource does not exist."""


class ConflictError(PermanentError):
    """A stale update lost a race (HTTP 409); re-read the object and decide again."""


class ChangeSlotLost(ConflictError):
    """A change lost its change slot (lease not renewed): another change may now run."""


class GateRejected(PermanentError):
    """A gate, a policy or a person rejected the change."""


class ApprovalTimedOut(GateRejected):
    """An approval nobody gave in time: the gate stays closed; the run ends "timed out"."""


class VerificationFailed(PermanentError):
    """A check ran and its result is wrong."""


class BackupMissing(PermanentError):
    """No complete backup satisfies the request."""


class TimedOut(PermanentError):
    """A bounded wait ran out: a hung dump, a stalled stream, a step past its deadline."""


class TransientError(OpsError):
    """Retrying after a delay may help."""

    transient = True


class ServiceUnavailable(TransientError):
    """The service could not be reached or answered with a server error."""


class Stalled(ServiceUnavailable):
    """A stream or a child process made no progress within its bound (a hung peer or pipe).

    Raised only after the stalled work was stopped: child processes killed, the multipart
    upload aborted, the scratch database left to be dropped. Transient: the next attempt
    opens new connections, and a stall that lasts fails every attempt within its bound.
    """


class Throttled(TransientError):
    """The service asked us to slow down, or a lock could not be taken in time."""
