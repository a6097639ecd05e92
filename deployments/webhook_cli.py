"""``opsflows webhook serve``: run the CI webhook receiver in the foreground.

Also runnable without the main CLI: ``python -m deployments.webhook_cli serve [options]``.
The server's limits (connections, header and body timeouts, keep-alive, head size) are the
``OPSFLOWS_WEBHOOK_*`` settings (``deployments/webhook_server.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from deployments.alert_receiver import OPS_DB_BLOCK, TOKEN_BLOCK, AlertReceiver, PrefectDesk
from deployments.webhook import (
    ROUTES_FILE,
    SECRET_BLOCK,
    BlockSecret,
    ReplayStore,
    Unavailable,
    create_app,
    load_routes,
)
from opsflows.errors import ConfigurationError
from opsflows.settings import Settings


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsflows webhook serve",
        description="Receive signed CI events and start the runbook deployments they map to; "
        "receive Alertmanager notifications and open, update or resolve incidents.",
    )
    parser.add_argument("--host", default=settings.host, help="address to bind")
    parser.add_argument(
        "--port", type=int, default=settings.webhook_port, help="port (OPSFLOWS_WEBHOOK_PORT)"
    )
    parser.add_argument("--routes", type=Path, default=ROUTES_FILE, help="routing table (YAML)")
    parser.add_argument(
        "--secret-block",
        default=SECRET_BLOCK,
        help="name of the Prefect Secret block holding the HMAC secret",
    )
    parser.add_argument(
        "--alertmanager-token-block",
        default=TOKEN_BLOCK,
        help="name of the Prefect Secret block holding Alertmanager's bearer token",
    )
    parser.add_argument(
        "--ops-db-block",
        default=OPS_DB_BLOCK,
        help="PostgresTarget block of the operations database (the incidents table)",
    )
    parser.add_argument(
        "--replay-db",
        type=Path,
        default=settings.state_dir / "webhook" / "deliveries.sqlite",
        help="sqlite file remembering delivery ids (survives restarts)",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    return parser


def serve_command(argv: list[str] | None = None) -> int:
    """Validate the routing table, then serve until interrupted; the exit code."""
    settings = Settings()
    args = build_parser(settings).parse_args(argv)
    try:
        table = load_routes(args.routes)
    except ConfigurationError as exc:
        print(f"webhook: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from deployments.webhook_server import server_config

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call
    secret = BlockSecret(args.secret_block)
    try:
        # Read it once now: pays Prefect's import before the first delivery, and says early
        # when the block is missing (the service still starts and answers 503 until it exists).
        asyncio.run(secret())
    except Unavailable as exc:
        print(f"webhook: warning: {exc}", file=sys.stderr, flush=True)
    token = BlockSecret(args.alertmanager_token_block)
    try:
        asyncio.run(token())
    except Unavailable as exc:
        print(f"webhook: warning: {exc}", file=sys.stderr, flush=True)
    body_timeout = settings.webhook_body_timeout_s
    alerts = AlertReceiver(token, PrefectDesk(args.ops_db_block), body_timeout_s=body_timeout)
    app = create_app(
        table, ReplayStore(args.replay_db), secret, alerts=alerts, body_timeout_s=body_timeout
    )
    print(
        f"webhook: {len(table.routes)} routes from {args.routes}; "
        f"POST http://{args.host}:{args.port}/webhook and /alertmanager; "
        f"at most {settings.webhook_max_connections} connections, "
        f"headers within {settings.webhook_header_timeout_s:g}s, "
        f"body within {body_timeout:g}s",
        flush=True,
    )
    server = uvicorn.Server(server_config(app, settings, args.host, args.port, args.log_level))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # the port was taken, or the app failed to start (logged above)
        print(f"webhook: could not serve on {args.host}:{args.port}", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "serve":
        print("usage: python -m deployments.webhook_cli serve [options]", file=sys.stderr)
        return 2
    return serve_command(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
