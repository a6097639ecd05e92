"""Rotation benchmark: new connections refused while the application credential rotates.

uv run python -m bench.bench_rotation [--transactions 10]

Against the test stack's own application secret (``opsflows/app/db``, its staging and
production consumers and the ``app-db`` block), the rotation runs with the parameters of the
scheduled ``rotate-credentials-monthly`` deployment (``deployments/catalog.py``), once as
scheduled (``alternating_users``) and once with ``strategy=single_user``. Throughout each run a
``pgbench -n -C`` load (``devstack.dbload``: a new connection per transaction, chunks of
``--transactions``, the credential re-read from AWSCURRENT before every chunk, as an app using
Secrets Manager does) logs in to the app database.

Per strategy: ``failed_connections`` (refused by the server), ``window_ms`` (first to last
chunk with a refusal; resolution one chunk), ``connections`` and ``flow_s``. A last
alternating rotation puts the stack's ``app`` role back in force when it is not.

The last stdout line is ``{"bench": "rotation", "alternating_users": {...},
"single_user": {...}, "ok": ...}``; target: alternating_users refuses 0 connections.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from bench.common import log, stack_info
from devstack import stack as devstack

INFO = stack_info()
devstack.export_env(INFO)  # before Prefect is imported: it reads PREFECT_API_URL then

from deployments.catalog import runner_deployments  # noqa: E402
from devstack.bootstrap import bootstrap  # noqa: E402
from devstack.dbload import (  # noqa: E402
    ConnectionLoad,
    pgbench_for,
    secrets_manager_current,
    summarize,
)
from devstack.postgres import APP_DATABASE, APP_ROLE, admin_conninfo  # noqa: E402
from devstack.stack import APP_DB_SECRET, AWS_REGION, MOTO_KEYS  # noqa: E402
from flows.rotate_credentials import rotate_credentials  # noqa: E402

SCHEDULED = "rotate-credentials-monthly"


def scheduled_parameters() -> dict[str, Any]:
    """The parameters the monthly schedule runs the flow with."""
    found = [d for d in runner_deployments() if d.name == SCHEDULED]
    if len(found) != 1:
        raise SystemExit(f"deployments/catalog.py has no single {SCHEDULED} deployment")
    return dict(found[0].parameters)


def rotate_under_load(
    sm: Any, pgbench: str, transactions: int, params: dict[str, Any]
) -> dict[str, Any]:
    """One rotation with ``params`` under the connection load: what the load saw."""
    current = secrets_manager_current(sm, APP_DB_SECRET)
    before = current()["username"]
    load = ConnectionLoad(current, pgbench, transactions=transactions)
    with load:
        load.wait_for_chunks(5)
        started = time.time()
        state = rotate_credentials(
            **params,
            rotation_id=f"bench-{uuid.uuid4().hex[:8]}",
            reason="rotation benchmark",
            return_state=True,
        )
        flow_s = time.time() - started
        load.wait_for_chunks(5)
    seen = summarize(load.chunks)
    return {
        "completed": state.is_completed(),
        "role_before": before,
        "role_after": current()["username"],
        "failed_connections": seen["failed_connections"],
        "window_ms": seen["window_ms"],
        "connections": seen["connections"],
        "flow_s": round(flow_s, 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_rotation", description=__doc__)
    parser.add_argument(
        "--transactions", type=int, default=10, help="connections per pgbench chunk (10)"
    )
    args = parser.parse_args(argv)

    passwords = devstack.stack_secrets(Path(INFO.state_dir))
    bootstrap(INFO, passwords)
    sm = boto3.client(
        "secretsmanager",
        endpoint_url=INFO.aws_endpoint_url,
        region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    pgbench = pgbench_for(
        admin_conninfo(INFO.host, INFO.postgres_port, passwords["postgres"], APP_DATABASE)
    )
    scheduled = scheduled_parameters()
    result: dict[str, Any] = {"bench": "rotation", "scheduled_parameters": scheduled}
    for label, params in (
        (str(scheduled.get("strategy", "flow default")), scheduled),
        ("single_user", {**scheduled, "strategy": "single_user"}),
    ):
        log(f"rotating with {params} under a pgbench -C load")
        result[label] = rotate_under_load(sm, pgbench, args.transactions, params)
        log(f"{label}: {result[label]}")
    if secrets_manager_current(sm, APP_DB_SECRET)()["username"] != APP_ROLE:
        log("putting the app role back in force (one more alternating rotation)")
        rotate_credentials(
            strategy="alternating_users",
            rotation_id=f"bench-{uuid.uuid4().hex[:8]}",
            reason="rotation benchmark: app role back",
        )
    alternating = result.get("alternating_users") or {}
    result["ok"] = bool(
        alternating.get("completed")
        and alternating.get("failed_connections") == 0
        and result["single_user"]["completed"]
    )
    return result


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
