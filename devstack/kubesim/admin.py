"""The simulator's own admin API under ``/_sim`` (plain JSON, never fault-injected).

* ``GET/POST /_sim/config``: kubelet timings (``pod_start_seconds``,
  ``crashloop_restart_seconds``, ``image_pull_backoff_seconds``).
* ``GET/POST/DELETE /_sim/faults``: add a rule (``{"status": 503, "method": "PATCH",
  "path": "deployments/web-app", "count": 1}``, see ``faults``), ``{"down": true|false}``, or
  clear everything. The answer also carries ``injected``: the requests faults acted on since
  the simulator started, by kind (never cleared).
* ``POST /_sim/pods``: take one pod down (``{"namespace": "staging", "pod": NAME,
  "reason": "OOMKilled"}``; reason ``Error`` by default): it crash-loops from now on and is
  never Ready again; deleting it lets its ReplicaSet start a clean one (one pod down).
* ``POST /_sim/reset``: back to the seed state, faults cleared; ``{"config": true}`` also
  restores the startup config.
* ``GET/DELETE /_sim/requests``: the log of recent API requests.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from devstack.kubesim.faults import FaultRule
from devstack.kubesim.simulator import Simulator


def _error(message: str, code: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def admin_routes(sim: Simulator) -> list[BaseRoute]:
    """The ``/_sim`` routes bound to one simulator."""

    def config_view() -> dict[str, Any]:
        with sim.lock:
            sim.sync()
            return {**dataclasses.asdict(sim.config), "seed": sim.seed, "time": sim.store.time}

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                sim.configure(await _body(request))
            except ValueError as exc:
                return _error(str(exc))
        return JSONResponse(config_view())

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            sim.faults.clear()
        elif request.method == "POST":
            try:
                data = await _body(request)
                if "down" in data:
                    if set(data) != {"down"} or not isinstance(data["down"], bool):
                        raise ValueError('"down" must be sent alone, as true or false')
                    sim.faults.set_down(data["down"])
                else:
                    sim.faults.add(FaultRule.from_json(data))
            except ValueError as exc:
                return _error(str(exc))
        return JSONResponse(sim.faults.snapshot())

    async def pods(request: Request) -> Response:
        try:
            data = await _body(request)
            namespace, name = str(data["namespace"]), str(data["pod"])
            pod = sim.take_down(namespace, name, str(data.get("reason") or "Error"))
        except KeyError as exc:
            missing = exc.args[0] if exc.args else "?"
            if missing in ("namespace", "pod"):
                return _error('"namespace" and "pod" are required')
            return _error(str(missing), 404)
        except ValueError as exc:
            return _error(str(exc))
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        return JSONResponse({"pod": name, "namespace": namespace, "containerStatuses": statuses})

    async def reset(request: Request) -> Response:
        try:
            data = await _body(request)
        except ValueError as exc:
            return _error(str(exc))
        sim.reset(config=bool(data.get("config", False)))
        return JSONResponse(config_view())

    async def requests(request: Request) -> Response:
        if request.method == "DELETE":
            sim.faults.clear_requests()
        return JSONResponse(sim.faults.requests())

    return [
        Route("/_sim/config", config, methods=["GET", "POST"]),
        Route("/_sim/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sim/pods", pods, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/requests", requests, methods=["GET", "DELETE"]),
    ]
