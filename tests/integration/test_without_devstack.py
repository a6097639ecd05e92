"""The product runs without the local stand-ins (the `devstack` extra: moto, the simulator,
the sample app): `opsflows migrate plan` and `opsflows webhook serve`
import none of them.

A fresh ``uv sync --no-dev`` (no extra) is what a team installs; here a subprocess refuses to
import those modules at all, which is the same check in a second instead of a new venv.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP_MIGRATIONS = REPO / "tests" / "fixtures" / "migrations" / "app"

BLOCKER = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"devstack", "moto"}:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed)")
        return None
sys.meta_path.insert(0, Refuse())
from opsflows.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_migrate_plan_needs_no_stand_ins() -> None:
    result = run_cli("migrate", "plan", str(APP_MIGRATIONS))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Expectation suites" in result.stdout


def test_webhook_serve_help_needs_no_stand_ins() -> None:
    result = run_cli("webhook", "serve", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--replay-db" in result.stdout


def test_the_blocker_really_blocks() -> None:
    """The devstack commands do need the stand-ins: the check above is not vacuous."""
    result = run_cli("devstack", "status")
    assert result.returncode != 0
    assert "No module named 'devstack'" in result.stderr
