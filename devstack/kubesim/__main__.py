"""``python -m devstack.kubesim``: serve the simulator with uvicorn (one process)."""

from __future__ import annotations

import argparse

import uvicorn

from devstack.kubesim.app import create_app
from devstack.kubesim.controller import SimConfig
from devstack.kubesim.simulator import SEEDS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m devstack.kubesim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18080, help="port to bind (default 18080)")
    parser.add_argument(
        "--seed", choices=SEEDS, default="default", help="initial objects (default: default)"
    )
    parser.add_argument(
        "--tick", type=float, default=1.0, help="background catch-up interval, seconds (0: off)"
    )
    defaults = SimConfig()
    parser.add_argument("--pod-start-seconds", type=float, default=defaults.pod_start_seconds)
    parser.add_argument(
        "--crashloop-restart-seconds", type=float, default=defaults.crashloop_restart_seconds
    )
    parser.add_argument(
        "--image-pull-backoff-seconds", type=float, default=defaults.image_pull_backoff_seconds
    )
    parser.add_argument(
        "--log-level", default="warning", help="uvicorn log level (default warning)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Parse options and serve until interrupted."""
    args = parse_args(argv)
    config = SimConfig(
        pod_start_seconds=args.pod_start_seconds,
        crashloop_restart_seconds=args.crashloop_restart_seconds,
        image_pull_backoff_seconds=args.image_pull_backoff_seconds,
    )
    app = create_app(seed=args.seed, tick=args.tick, config=config)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
