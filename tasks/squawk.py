"""Lint migrations with squawk (the ``squawk-cli`` package, pinned in pyproject).

squawk is run on the files themselves, from their directory, with the JSON reporter. Files
that run inside a transaction are linted with ``--assume-in-transaction`` (the runner wraps
each one), files that must run outside one without it. squawk honours its own ignore
comments (``-- squawk-ignore rule`` before a statement, ``-- squawk-ignore-file rule``) and
reports a misspelled rule name as ``unused-ignore``. Exit status 0 means no finding, 1 means
findings (or files not found), anything else is a usage error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from prefect import task

from decisions.migrations import Finding
from opsflows import retry
from opsflows.errors import ConfigurationError, PermanentError, scrub

PINNED_VERSION = "2.70.0"
_TIMEOUT_S = 60.0


def squawk_binary() -> Path:
    """The squawk executable installed next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return beside
    found = shutil.which("squawk")
    if found:
        return Path(found)
    raise ConfigurationError(
        "the squawk linter is not installed",
        hint=f"install the project's dependencies (`uv sync`; squawk-cli=={PINNED_VERSION})",
    )


def squawk_version() -> str:
    """``squawk --version`` without the program name, e.g. ``2.70.0``."""
    out = _run([str(squawk_binary()), "--version"], cwd=None)
    return out.stdout.strip().removeprefix("squawk").strip()


def parse_report(stdout: str) -> tuple[Finding, ...]:
    """Findings from squawk's JSON reporter (its lines are 0-based; ours are 1-based)."""
    try:
        items = json.loads(stdout or "[]")
    except json.JSONDecodeError as exc:
        raise PermanentError(f"squawk printed something that is not JSON: {scrub(stdout)}") from exc
    if not isinstance(items, list):
        raise PermanentError("squawk's JSON report is not a list")
    return tuple(
        Finding(
            file=Path(str(item["file"])).name,
            line=int(item.get("line") or 0) + 1,
            rule=str(item["rule_name"]),
            message=str(item.get("message") or ""),
            level=str(item.get("level") or "Warning"),
            help=str(item.get("help") or ""),
        )
        for item in items
    )


def run_squawk(
    directory: Path,
    names: Sequence[str],
    *,
    assume_in_transaction: bool,
    pg_version: str | None = None,
) -> tuple[Finding, ...]:
    """squawk's findings for ``names`` (files in ``directory``)."""
    if not names:
        return ()
    cmd = [str(squawk_binary()), "--reporter", "json"]
    if assume_in_transaction:
        cmd.append("--assume-in-transaction")
    if pg_version:
        cmd.append(f"--pg-version={pg_version}")
    out = _run([*cmd, "--", *names], cwd=directory)
    if out.returncode not in (0, 1):
        raise ConfigurationError(f"squawk refused its arguments: {scrub(out.stderr.strip())}")
    if out.returncode == 1 and not out.stdout.strip().startswith("["):
        raise ConfigurationError(
            f"squawk failed: {scrub((out.stdout + out.stderr).strip())}",
            hint=f"are the files in {directory}?",
        )
    return parse_report(out.stdout)


@task(name="lint migrations with squawk", **retry.ONCE)
def lint_migrations(
    directory: Path, files: Sequence[tuple[str, bool]], pg_version: str | None = None
) -> tuple[Finding, ...]:
    """Run squawk on the pending migration files and return every finding.

    Args:
        directory: Folder holding the migration files.
        files: ``(file name, runs in a transaction)`` for each pending file.
        pg_version: Server version squawk should judge against (e.g. ``15.8``).
    """
    inside = [name for name, transactional in files if transactional]
    outside = [name for name, transactional in files if not transactional]
    return run_squawk(
        directory, inside, assume_in_transaction=True, pg_version=pg_version
    ) + run_squawk(directory, outside, assume_in_transaction=False, pg_version=pg_version)


def _run(cmd: list[str], cwd: Path | None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PermanentError(f"squawk did not finish within {_TIMEOUT_S:.0f} s") from exc
    except OSError as exc:
        raise ConfigurationError(f"cannot run squawk: {exc}") from exc
