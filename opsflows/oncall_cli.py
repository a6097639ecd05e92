"""``opsflows oncall``: who is on call now (or at ``--at``) and in the next shift.

    opsflows oncall [--at ISO] [--json] [--file PATH]

Reads the on-call schedule (``--file``, else the ``oncall_file`` setting:
``OPSFLOWS_ONCALL_FILE``, default ``policy/oncall.yaml``), validates it against the roles
policy (``OPSFLOWS_ROLES_FILE``) and prints the primary, secondary and lead now and in the
next shift, the overrides in force and where each one's pages go. It reads files only: no
Prefect server or database is needed, so it also checks a schedule change before review.

Exit status: 0 shown, 1 the schedule is missing or does not validate (the message names the
file and what to fix), 2 bad input (``--at``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from decisions.oncall_view import oncall_view, parse_at, render_json, render_text
from opsflows.errors import ConfigurationError

_BAD_INPUT, _UNAVAILABLE = 2, 1


def add_parser(sub: Any) -> None:
    """The ``oncall`` command on ``opsflows``' subparsers."""
    cmd = sub.add_parser(
        "oncall",
        help="who is on call now and next (the on-call schedule, validated)",
        description="Who is primary, secondary and lead now (or at --at) and in the next shift.",
    )
    cmd.add_argument(
        "--at", default=None, help="an ISO instant instead of now (no offset: the schedule's zone)"
    )
    cmd.add_argument("--json", action="store_true", help="one JSON object")
    cmd.add_argument(
        "--file", type=Path, default=None, help="the schedule (default: OPSFLOWS_ONCALL_FILE)"
    )
    cmd.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Show who is on call; errors on stderr with what to do."""
    try:
        at = parse_at(args.at) if args.at else datetime.now(UTC)
    except ConfigurationError as exc:
        print(f"oncall: {exc}", file=sys.stderr)
        return _BAD_INPUT
    from procedures.oncall import load_schedule, schedule_file

    where = args.file or schedule_file()
    try:
        schedule = load_schedule(where)
        if schedule is None:
            raise ConfigurationError(
                f"the on-call schedule {where} does not exist",
                hint="restore policy/oncall.yaml or point OPSFLOWS_ONCALL_FILE (or --file) at "
                "your schedule; without one, pages follow the notification routing",
            )
        view = oncall_view(schedule, at)
    except ConfigurationError as exc:
        print(f"oncall: {exc}", file=sys.stderr)
        return _UNAVAILABLE
    print(render_json(view) if args.json else render_text(view), end="\n" if args.json else "")
    return 0
