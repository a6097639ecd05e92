"""Rollback benchmark: how fast a release that breaks only production is caught and undone.

uv run python -m bench.bench_rollback [--rps 20] [--bake-interval 5]

Against the test stack: production serves steady load (``devstack.loadgen``) while the staged
deploy ships ``registry.local/web-app:<x>-prodbroken``, which passes staging and answers 30%
5xx in production. A prober reads production's ``/health`` every 0.1 s throughout.

* ``detect_s``: deploy start to the first failing bake measurement (from the run's
  ``bake-production`` table artifact, whose rows carry epoch timestamps);
* ``recover_s``: that measurement to the moment from which production answers healthy from
  the previous image on every probe until the end (the previous revision serving healthy).

The last stdout line is ``{"bench": "rollback", "detect_s": ..., "recover_s": ...}``;
target: recover_s <= 30 with the default bake interval (5 s).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import log, stack_info
from devstack import stack as devstack

INFO = stack_info()
devstack.export_env(INFO)  # before Prefect is imported: it reads PREFECT_API_URL then

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId  # noqa: E402
from prefect.logging import disable_run_logger  # noqa: E402

from blocks.kube import KubeEnvironment  # noqa: E402
from devstack.bootstrap import bootstrap  # noqa: E402
from devstack.loadgen import run_load  # noqa: E402
from flows.deploy import staged_deploy  # noqa: E402
from procedures.operation import load_block  # noqa: E402
from tasks import rollout  # noqa: E402

TARGET_RECOVER_S = 30.0
BAD = ("broken", "crashloop", "badpull", "slow", "flaky")


class Prober:
    """Reads ``/health`` every ``interval`` seconds: (time, status, image) per probe."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, int | None, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while not self._stop.is_set():
                at = time.time()
                try:
                    response = http.get(self.url)
                    image = response.json().get("image")
                    self.samples.append((at, response.status_code, image))
                except (httpx.HTTPError, ValueError):
                    self.samples.append((at, None, None))
                self._stop.wait(self.interval)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def healthy_from(self, image: str, after: float) -> float | None:
        """The first probe time after ``after`` from which every probe is healthy on ``image``."""
        since: float | None = None
        for at, status, served in self.samples:
            if at < after:
                continue
            if status == 200 and served == image:
                since = at if since is None else since
            else:
                since = None
        return since


def first_failure(run_id: Any) -> float | None:
    """Epoch of the first non-passing bake measurement, from the run's bake table."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    for artifact in artifacts:
        if artifact.key != "bake-production":
            continue
        data: Any = artifact.data
        rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data or []
        bad = [float(r["epoch"]) for r in rows if r["verdict"] != "pass"]
        if bad:
            return min(bad)
    return None


def ensure_healthy(env: KubeEnvironment, fallback: str) -> str:
    """Production (or staging) on a healthy image before the run; that image."""
    with disable_run_logger():
        image = str(rollout.current_release.fn(env).image)
        if any(marker in image for marker in BAD):
            rollout.set_image.fn(env, fallback)
            image = fallback
        rollout.wait_for_rollout.fn(env, timeout_s=60)
    return image


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_rollback", description=__doc__)
    parser.add_argument("--rps", type=float, default=20.0, help="load on production (20)")
    parser.add_argument("--bake-interval", type=float, default=5.0, help="bake interval (5 s)")
    args = parser.parse_args(argv)

    bootstrap(INFO, devstack.stack_secrets(Path(INFO.state_dir)))
    staging = load_block(KubeEnvironment, "staging")
    production = load_block(KubeEnvironment, "production")
    previous = ensure_healthy(production, "registry.local/web-app:1.0.0")
    staging_before = ensure_healthy(staging, previous)
    image = f"registry.local/web-app:9.{uuid.uuid4().int % 10_000}.0-prodbroken"
    log(f"production on {previous}; deploying {image} under {args.rps:g} rps")

    stop = threading.Event()
    load = threading.Thread(
        target=run_load, args=(INFO.app_url("production") + "/", args.rps, 0, stop), daemon=True
    )
    load.start()
    time.sleep(3)
    try:
        with Prober(INFO.app_url("production") + "/health") as prober:
            started = time.time()
            state = staged_deploy(
                image=image,
                bake_interval_s=args.bake_interval,
                smoke_retry_s=5,
                return_state=True,
            )
            flow_s = time.time() - started
            time.sleep(2)  # keep probing: "recovered" must hold after the run ends
    finally:
        stop.set()
        load.join(timeout=15)
        with disable_run_logger():
            rollout.set_image.fn(staging, staging_before)
    run_id = state.state_details.flow_run_id
    detected = first_failure(run_id)
    recovered = prober.healthy_from(previous, detected) if detected else None
    with disable_run_logger():
        final = str(rollout.current_release.fn(production).image)
    result = {
        "bench": "rollback",
        "detect_s": round(detected - started, 2) if detected else None,
        "recover_s": round(recovered - detected, 2) if detected and recovered else None,
        "bake_interval_s": args.bake_interval,
        "flow_s": round(flow_s, 2),
        "run_failed_as_expected": state.is_failed(),
        "production_back_on_previous": final == previous,
        "target_recover_s": TARGET_RECOVER_S,
    }
    result["ok"] = bool(
        result["recover_s"] is not None
        and result["recover_s"] <= TARGET_RECOVER_S
        and result["production_back_on_previous"]
    )
    return result


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
