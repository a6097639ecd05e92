"""``opsflows oplog``: the operation log, for people.

    opsflows oplog [--since 7d] [--operation NAME] [--status failed] [--limit N] [--json]
    opsflows oplog show ID [--json]

The list is newest first, one line per entry; ``show`` prints one entry in the runbook's
template (Date/Time, Operation, Reason, Impact, Duration, Issues, Follow-up), its approvals,
the link to its flow run in the Prefect UI and its details. ``--json`` prints one JSON
object per line. The entries are read (read-only) from the operations database of the
``ops-db`` PostgresTarget block (``--ops-db NAME``), loaded from the Prefect API: the local
stack's when one is recorded, else ``PREFECT_API_URL``. The UI link is Prefect's UI URL
(``PREFECT_UI_URL``, else ``PREFECT_API_URL`` without ``/api``).

Exit status: 0 listed or shown (an empty list too), 1 the block, the Prefect API or the
database cannot be read, or no entry has that ID, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from decisions.oplog_render import json_line, render_entry, render_list
from decisions.oplog_view import (
    SINCE_FORMS,
    entry_view,
    parse_entry_ref,
    parse_since,
    parse_status,
)
from opsflows.errors import ConfigurationError, OpsError
from opsflows.oplog import STATUSES

if TYPE_CHECKING:
    from blocks.postgres import PostgresTarget

#: The operations database's block (as ``procedures.operation.OPS_DB``; not imported here so
#: that building the parser imports no Prefect).
OPS_DB = "ops-db"
DEFAULT_LIMIT = 50
_BAD_INPUT, _UNAVAILABLE = 2, 1


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def add_parser(sub: Any) -> None:
    """The ``oplog`` command (and ``oplog show ID``) on ``opsflows``' subparsers."""
    log = sub.add_parser(
        "oplog",
        help="list operation-log entries (newest first), or show one: oplog show ID",
        description="List operation-log entries, newest first; `oplog show ID` prints one.",
    )
    log.add_argument("--since", default=None, help=f"entries started since: {SINCE_FORMS}")
    log.add_argument("--operation", default=None, metavar="NAME", help="one operation only")
    log.add_argument("--status", default=None, help="one status only: " + ", ".join(STATUSES))
    log.add_argument(
        "--limit", type=_positive, default=DEFAULT_LIMIT, help="at most N entries (50)"
    )
    log.add_argument("--json", action="store_true", help="one JSON object per line")
    log.add_argument("--ops-db", default=OPS_DB, help="PostgresTarget block of the ops database")
    actions = log.add_subparsers(dest="oplog_action", title="one entry")
    show = actions.add_parser("show", help="show ID: the entry in full, with its flow run's link")
    show.add_argument("id", help="the entry's id (first column of the list) or its flow run's id")
    # SUPPRESS: given before `show`, the option keeps its value (a default would reset it).
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    show.add_argument("--ops-db", default=argparse.SUPPRESS)
    log.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """List, or show one entry; errors on stderr with what to do."""
    try:  # bad input is refused before anything is read
        if args.oplog_action == "show":
            ref = parse_entry_ref(args.id)
        else:
            since = parse_since(args.since, datetime.now(UTC)) if args.since else None
            status = parse_status(args.status) if args.status else None
    except ConfigurationError as exc:
        print(f"oplog: {exc}", file=sys.stderr)
        return _BAD_INPUT
    _point_at_stack()
    from tasks.oplog import list_entries, read_entry

    try:
        target = ops_target(args.ops_db)
        if args.oplog_action == "show":
            row = read_entry(target, ref)
            rows = [row] if row is not None else []
        else:
            rows = list_entries(
                target, since=since, operation=args.operation, status=status, limit=args.limit
            )
    except OpsError as exc:
        print(f"oplog: {exc}", file=sys.stderr)
        if exc.transient:
            print(
                f"oplog: the operation log is in the database of the PostgresTarget block "
                f"{args.ops_db!r}: start that database (locally: `make up`) or point the "
                "block (or --ops-db NAME) at the right one, then try again",
                file=sys.stderr,
            )
        return _UNAVAILABLE
    ui_url = _ui_url()
    views = [entry_view(r, ui_url) for r in rows]
    if args.oplog_action == "show":
        if not views:
            print(
                f"oplog show: no operation-log entry {args.id!r} in {target.describe()}; "
                "list the entries with `opsflows oplog` and use the first column",
                file=sys.stderr,
            )
            return _UNAVAILABLE
        print(json_line(views[0]) if args.json else render_entry(views[0]).rstrip("\n"))
        return 0
    if args.json:
        for view in views:
            print(json_line(view))
    elif views:
        print(render_list(views), end="")
    else:
        print("no operation-log entries match")
    return 0


def ops_target(name: str) -> PostgresTarget:
    """The operations database's block, loaded from the Prefect API (ConfigurationError when
    it is missing or the API cannot be reached)."""
    from blocks.postgres import PostgresTarget
    from opsflows.cli_blocks import load_for_cli

    return load_for_cli(PostgresTarget, name)


def _point_at_stack() -> None:
    """The local stack's Prefect API when one is recorded; otherwise PREFECT_API_URL as set
    (a team's install has no `devstack` extra)."""
    try:
        from devstack import stack
    except ImportError:
        return
    from opsflows.settings import Settings

    info = stack.load(Settings())
    if info is not None:
        stack.export_env(info)


def _ui_url() -> str:
    """Prefect's UI URL: PREFECT_UI_URL, else PREFECT_API_URL without ``/api``."""
    from prefect.settings import get_current_settings

    return get_current_settings().ui_url or ""
