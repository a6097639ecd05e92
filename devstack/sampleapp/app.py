"""The Starlette app: ``/`` traffic, ``/health`` and ``/metrics``, served "by" Ready pods."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devstack.sampleapp.behaviour import LATENCY_JITTER, Behaviour, behaviour_for
from devstack.sampleapp.control import (
    MEMORY_LIMIT_BYTES,
    POOL_SIZE,
    CpuMeter,
    FaultError,
    PodFaults,
    Volume,
    VolumeFull,
    check_level,
    fault_behaviour,
    traffic_load,
)
from devstack.sampleapp.metrics import AppMetrics, PodLoad
from devstack.sampleapp.pods import Pod, PodWatcher


class _MetricsMiddleware:
    """Counts every HTTP request by path and status and times it (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - started)


def create_app(
    *,
    env: str,
    kube_url: str,
    namespace: str,
    deployment: str = "web-app",
    selector: str | None = None,
    poll_interval: float = 0.5,
    transport: httpx.AsyncBaseTransport | None = None,
    seed: int | None = None,
    registry: CollectorRegistry | None = None,
    volume: Volume | None = None,
) -> Starlette:
    """Build the sample app for one environment.

    Args:
        env: Environment name (``staging`` or ``production``); production-only tags use it.
        kube_url: Base URL of the Kubernetes API simulator.
        namespace: Namespace holding the Deployment.
        deployment: Deployment name (its pods are selected by ``app=<deployment>``).
        selector: Label selector overriding ``app=<deployment>``.
        poll_interval: Seconds between pod-list polls.
        transport: httpx transport for the pod-list client (tests: ``httpx.MockTransport``).
        seed: Seed for pod choice, latency jitter and error draws (reproducible runs).
        registry: Prometheus registry (a fresh one by default).
        volume: The app's disk (a directory with a quota), for uploads and the disk alerts.

    ``app.state.watcher``, ``app.state.metrics`` and ``app.state.faults`` expose the
    internals to tests; ``/_sim/faults`` and ``/_sim/volume`` are described in
    :mod:`devstack.sampleapp.control`.
    """
    rng = random.Random(seed)
    metrics = AppMetrics(env, registry)
    watcher = PodWatcher(
        kube_url,
        namespace,
        selector or f"app={deployment}",
        poll_interval=poll_interval,
        transport=transport,
        on_update=metrics.set_pods,
    )

    faults = PodFaults()
    cpu_meter = CpuMeter()
    in_flight: dict[str, int] = {}
    traffic = {"level": 0.0}  # pods' worth of CPU demand, spread over the Ready pods

    def behaviour_of(pod: Pod) -> Behaviour:
        behaviour = behaviour_for(pod.image, env)
        fault = faults.of(pod)
        return behaviour if fault is None else behaviour.worst(fault)

    def pick_pod() -> Pod | None:
        # A Service sends each request to any Ready endpoint: traffic mixes during a rollout.
        pods = watcher.pods
        return rng.choice(pods) if pods else None

    def served_by(pod: Pod) -> dict[str, str]:
        return {"X-Served-By": pod.name, "X-Image": pod.image}

    def no_pods() -> JSONResponse:
        return JSONResponse(
            {"status": "unavailable", "error": "no ready pods", "env": env},
            status_code=503,
        )

    async def index(request: Request) -> Response:
        pod = pick_pod()
        if pod is None:
            return no_pods()
        behaviour = behaviour_of(pod)
        jitter = rng.uniform(1 - LATENCY_JITTER, 1 + LATENCY_JITTER)
        metrics.served(pod.name)
        in_flight[pod.name] = in_flight.get(pod.name, 0) + 1  # holds a DB connection meanwhile
        try:
            await asyncio.sleep(behaviour.latency_s * jitter)
        finally:
            in_flight[pod.name] -= 1
        body = {"env": env, "pod": pod.name, "image": pod.image}
        if rng.random() < behaviour.error_rate:
            return JSONResponse(
                {"error": "internal server error", **body}, 500, headers=served_by(pod)
            )
        return JSONResponse({"message": "hello from web-app", **body}, headers=served_by(pod))

    async def health(request: Request) -> Response:
        pod = pick_pod()
        if pod is None:
            return no_pods()
        body = {"env": env, "pod": pod.name, "image": pod.image}
        if not behaviour_of(pod).healthy:
            return JSONResponse({"status": "error", **body}, 503, headers=served_by(pod))
        return JSONResponse({"status": "ok", **body}, headers=served_by(pod))

    async def metrics_endpoint(request: Request) -> Response:
        pods = watcher.pods
        faults.keep_only(pods)
        measured = cpu_meter.read()
        loads: dict[str, PodLoad] = {}
        backlog = 0
        share, queued = traffic_load(traffic["level"], len(pods))
        for pod in pods:
            behaviour = behaviour_of(pod)
            backlog += max(behaviour.queue, queued)
            used = POOL_SIZE if behaviour.pool_exhausted else in_flight.get(pod.name, 0)
            cpu = max(measured if behaviour.cpu is None else behaviour.cpu, share)
            memory = faults.memory(pod, behaviour)
            loads[pod.name] = PodLoad(
                cpu, POOL_SIZE, min(POOL_SIZE, used), memory, MEMORY_LIMIT_BYTES
            )
        metrics.set_runtime(
            queue=sum(in_flight.values()) + backlog,
            pods=loads,
            unready=watcher.unready,
            volume=None if volume is None else (volume.size_bytes, volume.used_bytes()),
        )
        content, content_type = metrics.render()
        return Response(content, headers={"Content-Type": content_type})

    async def sim_faults(request: Request) -> Response:
        if request.method == "DELETE":
            return JSONResponse({"cleared": faults.clear()})
        if request.method == "POST":
            body = await request.json()
            if not isinstance(body, dict):
                return JSONResponse({"error": "expected a JSON object"}, 400)
            ready = [pod.name for pod in watcher.pods]
            names = body.get("pods") or ready
            if not names:
                return JSONResponse({"error": "no ready pod to inject a fault into"}, 409)
            try:
                behaviour = fault_behaviour(
                    str(body.get("fault")), body.get("error_rate"), body.get("leak_mb_per_s")
                )
            except (FaultError, TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, 400)
            faults.inject(names, str(body["fault"]), behaviour)
        return JSONResponse({"env": env, "faults": faults.describe()})

    async def sim_traffic(request: Request) -> Response:
        if request.method == "DELETE":
            traffic["level"] = 0.0
        elif request.method == "POST":
            body = await request.json()
            try:
                traffic["level"] = check_level(
                    body.get("level") if isinstance(body, dict) else body
                )
            except FaultError as exc:
                return JSONResponse({"error": str(exc)}, 400)
        share, queued = traffic_load(traffic["level"], len(watcher.pods))
        return JSONResponse(
            {
                "env": env,
                "level": traffic["level"],
                "ready_pods": len(watcher.pods),
                "cpu_per_pod": share,
                "queue_per_pod": queued,
            }
        )

    async def sim_volume(request: Request) -> Response:
        if volume is None:
            return JSONResponse({"error": "this app has no volume (--volume)"}, 404)
        if request.method == "DELETE":
            volume.empty()
        elif request.method == "POST":
            body = await request.json()
            body = body if isinstance(body, dict) else {}
            ratio, nbytes = body.get("ratio"), body.get("bytes")
            try:
                if ratio is not None:
                    nbytes = int(float(ratio) * volume.size_bytes) - volume.used_bytes()
                volume.fill(
                    int(nbytes or 0), str(body.get("dir") or "logs"), float(body.get("age_s") or 0)
                )
            except VolumeFull as exc:
                return JSONResponse({"error": str(exc)}, 507)
            except (TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse(volume.listing())

    async def delete_logs(request: Request) -> Response:
        if volume is None:
            return JSONResponse({"error": "this app has no volume (--volume)"}, 404)
        body = await request.json()
        names = body.get("names") if isinstance(body, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return JSONResponse({"error": 'expected {"names": [file names in logs/]}'}, 400)
        try:
            deleted = volume.delete_logs(names)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"deleted": deleted, **volume.listing()})

    async def upload(request: Request) -> Response:
        if volume is None:
            return JSONResponse({"error": "this app has no volume (--volume)"}, 404)
        try:
            path = volume.write_upload(request.path_params["name"], await request.body())
        except VolumeFull as exc:
            return JSONResponse({"error": str(exc)}, 507)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"stored": path.name}, 201)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with watcher:
            await watcher.refresh()
            poller = asyncio.create_task(watcher.run(), name="pod-watcher")
            try:
                yield
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/metrics", metrics_endpoint),
            Route("/upload/{name}", upload, methods=["PUT"]),
            Route("/_sim/faults", sim_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/traffic", sim_traffic, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/volume", sim_volume, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/volume/logs/delete", delete_logs, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.state.watcher = watcher
    app.state.metrics = metrics
    app.state.faults = faults
    app.state.env = env
    return app
