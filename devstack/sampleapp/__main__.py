"""``python -m devstack.sampleapp``: serve the sample web app for one environment."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from devstack.sampleapp.app import create_app
from devstack.sampleapp.control import Volume


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.sampleapp",
        description="Sample web app whose behaviour follows the image deployed in the simulator.",
    )
    parser.add_argument("--env", required=True, help="environment: staging or production")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    parser.add_argument("--kube-url", required=True, help="Kubernetes API (simulator) base URL")
    parser.add_argument("--namespace", help="namespace of the Deployment (default: --env)")
    parser.add_argument("--deployment", default="web-app", help="Deployment name (default web-app)")
    parser.add_argument("--selector", help="pod label selector (default app=<deployment>)")
    parser.add_argument("--poll", type=float, default=0.5, help="pod poll interval in s (0.5)")
    parser.add_argument("--seed", type=int, help="seed for pod choice, jitter and errors")
    parser.add_argument("--log-level", default="info", help="log level (default info)")
    parser.add_argument("--volume", help="directory of the app's disk (quota enforced by the app)")
    parser.add_argument(
        "--volume-size-mb", type=float, default=64.0, help="quota of --volume in MiB (64)"
    )
    args = parser.parse_args(argv)
    if args.poll <= 0:
        parser.error("--poll must be > 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # one line per poll would drown the log; the watcher logs outages itself
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(
        env=args.env,
        kube_url=args.kube_url,
        namespace=args.namespace or args.env,
        deployment=args.deployment,
        selector=args.selector,
        poll_interval=args.poll,
        seed=args.seed,
        volume=(
            Volume(Path(args.volume), int(args.volume_size_mb * 1024 * 1024))
            if args.volume
            else None
        ),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
