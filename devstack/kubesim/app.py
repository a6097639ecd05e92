"""The ASGI app (Kubernetes API, ``/_sim`` admin, ``/_sink``) and an in-thread test server."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware

from devstack.kubesim.admin import admin_routes
from devstack.kubesim.api import api_routes, http_error
from devstack.kubesim.clock import Clock
from devstack.kubesim.controller import SimConfig
from devstack.kubesim.faults import FaultMiddleware
from devstack.kubesim.simulator import Simulator, Ticker
from devstack.sink import SinkStore, sink_routes


def create_app(
    simulator: Simulator | None = None,
    *,
    seed: str = "default",
    tick: float = 0.05,
    config: SimConfig | None = None,
    clock: Clock | None = None,
    sink: SinkStore | None = None,
) -> Starlette:
    """Build the simulator app; ``app.state.simulator`` and ``app.state.sink`` expose the state.

    Args:
        simulator: an existing simulator to serve (otherwise one is built from the rest).
        seed: ``"default"`` (staging/production with ``web-app``) or ``"none"``.
        tick: background catch-up interval in seconds; 0 relies on per-request catch-up only.
        config: kubelet timings.
        clock: time source (a ``FakeClock`` in tests).
        sink: the notification sink's store.
    """
    sim = simulator or Simulator(seed=seed, clock=clock, config=config)
    sink_store = sink or SinkStore()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ticker = Ticker(sim, tick) if tick > 0 else None
        if ticker is not None:
            ticker.start()
        try:
            yield
        finally:
            if ticker is not None:
                ticker.stop()

    app = Starlette(
        routes=[*api_routes(sim), *admin_routes(sim), *sink_routes(sink_store)],
        middleware=[Middleware(FaultMiddleware, injector=sim.faults)],
        exception_handlers={404: http_error, 405: http_error},
        lifespan=lifespan,
    )
    app.state.simulator = sim
    app.state.sink = sink_store
    return app


class SimServer:
    """A simulator served by uvicorn on a background thread (see ``run_in_thread``)."""

    def __init__(
        self, server: uvicorn.Server, thread: threading.Thread, app: Starlette, url: str
    ) -> None:
        self._server = server
        self._thread = thread
        self.app = app
        self.url = url
        self.simulator: Simulator = app.state.simulator
        self.sink: SinkStore = app.state.sink

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> SimServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulator: Simulator | None = None,
    seed: str = "default",
    tick: float = 0.05,
    config: SimConfig | None = None,
    clock: Clock | None = None,
    startup_timeout: float = 10.0,
) -> SimServer:
    """Serve a simulator in this process (``port=0`` picks a free port); returns once it listens."""
    app = create_app(simulator, seed=seed, tick=tick, config=config, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="kubesim-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"kubesim did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return SimServer(server, thread, app, f"http://{host}:{bound}")
