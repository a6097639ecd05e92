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

from devstack.sampleapp.behaviour import LATENCY_JITTER, behaviour_for
from devstack.sampleapp.metrics import AppMetrics
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

    ``app.state.watcher`` and ``app.state.metrics`` expose the internals to tests.
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
        behaviour = behaviour_for(pod.image, env)
        jitter = rng.uniform(1 - LATENCY_JITTER, 1 + LATENCY_JITTER)
        await asyncio.sleep(behaviour.latency_s * jitter)
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
        if not behaviour_for(pod.image, env).healthy:
            return JSONResponse({"status": "error", **body}, 503, headers=served_by(pod))
        return JSONResponse({"status": "ok", **body}, headers=served_by(pod))

    async def metrics_endpoint(request: Request) -> Response:
        content, content_type = metrics.render()
        return Response(content, headers={"Content-Type": content_type})

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
        ],
        lifespan=lifespan,
    )
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.state.watcher = watcher
    app.state.metrics = metrics
    app.state.env = env
    return app
