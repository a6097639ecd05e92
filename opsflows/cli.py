"""``opsflows``: the local stack and its bootstrap.

opsflows devstack up|down|status|ui-password [--purge] [--remove-os-user]
opsflows devstack backfill-metrics [--days 30] [--force]
opsflows bootstrap
opsflows up
opsflows webhook serve [--port N] [--routes FILE] [--secret-block NAME]
opsflows incidents [--recent N] [--ops-db BLOCK]
opsflows oplog [--since 7d] [--operation NAME] [--status failed] [--limit N] [--json]
opsflows oplog show ID [--json]
opsflows oncall [--at ISO] [--json] [--file PATH]
opsflows migrate plan DIR [--database-url URL | --block NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from opsflows import oncall_cli, oplog_cli
from opsflows.settings import Settings

# `devstack` (the local stand-ins: simulator, moto, sample app) is an optional extra: only the
# commands that drive the local stack import it, inside the command.


def _devstack(args: argparse.Namespace) -> int:
    from devstack import stack
    from devstack.procs import StartError

    settings = Settings()
    if args.action == "up":
        try:
            info = stack.up(settings)
        except StartError as exc:
            print(f"devstack: {exc}", file=sys.stderr)
            return 1
        print(f"devstack up; state in {info.state_dir}, env file {info.state_dir}/env")
        print(f"Prefect UI: {info.prefect_ui_url}  (password: `opsflows devstack ui-password`)")
    elif args.action == "backfill-metrics":
        from devstack.backfill import backfill_stack

        try:
            print(backfill_stack(args.days, force=args.force))
        except (StartError, FileNotFoundError) as exc:
            print(f"devstack: {exc}", file=sys.stderr)
            return 1
    elif args.action == "ui-password":
        # Printed only when asked, to the person's terminal: the UI's login asks for it.
        recorded = stack.load(settings)
        secret = recorded.prefect_auth_string if recorded else None
        if not secret:
            print("devstack: no stack credentials yet; run `make up` first", file=sys.stderr)
            return 1
        print(secret)
    elif args.action == "down":
        stopped = stack.down(settings, purge=args.purge, remove_os_user=args.remove_os_user)
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
    else:
        for name, state in stack.status(settings).items():
            print(f"{name:18} {state}")
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    from devstack import stack

    settings = Settings()
    info = stack.load(settings)
    if info is None:
        print(
            "bootstrap: no local stack recorded; run `opsflows devstack up` first", file=sys.stderr
        )
        return 1
    stack.export_env(info)
    # Bootstrap saves into the Prefect server; blocks point at PostgreSQL, moto and the
    # simulator. Say which of them is down instead of failing half-way with a traceback.
    needed = ("prefect", "postgres", "moto", "kubesim")
    states = stack.status(settings)
    down = [name for name in needed if states.get(name) == "stopped"]
    if down:
        print(
            f"bootstrap: {', '.join(down)} not running (state {settings.state_dir}); start the "
            "stack with `make up` or `opsflows devstack up`, then run bootstrap again",
            file=sys.stderr,
        )
        return 1
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    from devstack.bootstrap import bootstrap
    from opsflows.errors import scrub

    try:
        result = bootstrap(info, stack.stack_secrets(settings.state_dir))
    except (OSError, httpx.HTTPError, PrefectHTTPStatusError) as exc:
        print(
            f"bootstrap: the Prefect API at {info.prefect_api_url} failed "
            f"({type(exc).__name__}: {scrub(str(exc))}); check `opsflows devstack status` and "
            "the log under the state folder, then run bootstrap again",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _up(args: argparse.Namespace) -> int:
    """Serve every runbook, run the stack smoke check once, print where the UI is."""
    from devstack import stack
    from devstack.procs import StartError

    settings = Settings()
    info = stack.load(settings)
    if info is None:
        print("up: no local stack recorded; run `opsflows devstack up` first", file=sys.stderr)
        return 1
    stack.export_env(info)
    try:
        stack.serve_runbooks(info)
        stack.serve_webhook(info)
    except StartError as exc:
        print(f"up: {exc}", file=sys.stderr)
        return 1
    from prefect.deployments import run_deployment

    run: Any = run_deployment("stack-smoke/stack-smoke", timeout=300)
    state = run.state
    print(f"stack smoke check: {state.name if state else 'unknown'}")
    print(f"CI webhook: POST {info.webhook_url}/webhook  (docs/ci.md)")
    print(f"Alertmanager receiver: POST {info.webhook_url}/alertmanager  (README: Incidents)")
    print(f"Prefect UI: {info.prefect_ui_url}  (runbooks served; `make down` stops everything)")
    print("  its login asks for the stack's API password: `uv run opsflows devstack ui-password`")
    return 0 if state is not None and state.is_completed() else 1


def _webhook(args: argparse.Namespace) -> int:
    from deployments.webhook_cli import serve_command

    return serve_command(list(args.options))


def _incidents(args: argparse.Namespace) -> int:
    """Print the open incidents and the most recently resolved ones."""
    from devstack import stack

    info = stack.load(Settings())
    if info is not None:  # the local stack's Prefect API; otherwise PREFECT_API_URL as set
        stack.export_env(info)
    from datetime import UTC

    from blocks.postgres import PostgresTarget
    from opsflows.errors import OpsError
    from tasks.incidents import list_incidents

    try:
        target: PostgresTarget = PostgresTarget.load(args.ops_db)  # type: ignore[assignment]
        incidents = list_incidents(target, args.recent)
    except (OpsError, ValueError) as exc:
        print(f"incidents: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the Prefect API is down or unreachable
        print(
            f"incidents: cannot read the ops-db block ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return 1
    if not incidents:
        print("no incidents")
        return 0
    print(f"{'id':>5}  sev  {'status':12}  {'triggered (UTC)':19}  {'acknowledged by':16}  title")
    for inc in incidents:
        print(
            f"{inc.id:>5}  {inc.severity:3}  {inc.status:12}  "
            f"{inc.triggered_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  "
            f"{(inc.acknowledged_by or '-')[:16]:16}  "
            f"{inc.title[:70]}"
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from opsflows.migrate_cli import main as migrate_main

    return migrate_main(args.argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opsflows", description="opsflows runbooks and stack")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("devstack", help="start, stop or show the local stack")
    dev.add_argument("action", choices=("up", "down", "status", "ui-password", "backfill-metrics"))
    dev.add_argument("--days", type=float, default=30, help="with backfill-metrics: history")
    dev.add_argument("--force", action="store_true", help="with backfill-metrics: write again")
    dev.add_argument("--purge", action="store_true", help="with down: delete all local state")
    dev.add_argument(
        "--remove-os-user",
        action="store_true",
        help="with down: also delete the OS user the services ran as (the test stack's own)",
    )
    dev.set_defaults(func=_devstack)
    boot = sub.add_parser("bootstrap", help="save blocks and concurrency limits for the stack")
    boot.set_defaults(func=_bootstrap)
    up = sub.add_parser("up", help="serve every runbook and run the stack smoke check")
    up.set_defaults(func=_up)
    hook = sub.add_parser("webhook", help="the CI webhook receiver (see docs/ci.md)")
    hook.add_argument("action", choices=("serve",))
    hook.add_argument("options", nargs=argparse.REMAINDER, help="see `opsflows webhook serve -h`")
    hook.set_defaults(func=_webhook)
    inc = sub.add_parser("incidents", help="list open and recently resolved incidents")
    inc.add_argument("--recent", type=int, default=20, help="resolved incidents to show")
    inc.add_argument("--ops-db", default="ops-db", help="PostgresTarget block of the ops database")
    inc.set_defaults(func=_incidents)
    oplog_cli.add_parser(sub)
    oncall_cli.add_parser(sub)
    mig = sub.add_parser("migrate", help="lint and plan schema migrations (migrate plan DIR)")
    mig.add_argument(
        "argv", nargs=argparse.REMAINDER, help="plan DIR [--database-url URL | --block NAME]"
    )
    mig.set_defaults(func=_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
