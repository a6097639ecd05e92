"""The Kubernetes REST API over HTTP (core/v1, apps/v1, rbac/v1), as the official client calls it.

Handlers only decode HTTP (path, query, body, Content-Type) and encode results; semantics
live in ``registry`` and run through ``Simulator.call`` so each request sees an up-to-date
cluster.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from devstack.kubesim.errors import ApiError, bad_request, status_body
from devstack.kubesim.kinds import DEPLOYMENTS, NAMESPACES, PODS, REPLICASETS, SECRETS, ResourceType
from devstack.kubesim.pods import NoPreviousContainer, container_log
from devstack.kubesim.rbac import (
    CLUSTERROLEBINDINGS,
    CLUSTERROLES,
    ROLEBINDINGS,
    ROLES,
    SERVICEACCOUNTS,
)
from devstack.kubesim.registry import Registry
from devstack.kubesim.simulator import Simulator

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Callable[[Registry], Any]]
_READ = ["GET"]
_ITEM_METHODS = ["GET", "PUT", "PATCH", "DELETE"]
_COLLECTION_METHODS = ["GET", "POST"]


def json_response(data: Any, status_code: int = 200) -> JSONResponse:
    """A JSON response with the apiserver's content type."""
    return JSONResponse(data, status_code=status_code)


def error_response(exc: ApiError) -> JSONResponse:
    """The ``Status`` response for an ``ApiError``."""
    return JSONResponse(exc.status(), status_code=exc.code)


async def read_json(request: Request) -> Any:
    """The decoded body, ``None`` if empty, or a 400 ``ApiError``."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body of the request was in an unknown format: {exc}") from exc


def endpoint(sim: Simulator, handler: Handler, created: int = 200) -> Endpoint:
    """Wrap a handler: decode the body, run under the simulator lock, map ``ApiError``."""

    async def run(request: Request) -> Response:
        try:
            body = (
                await read_json(request)
                if request.method in ("POST", "PUT", "PATCH", "DELETE")
                else None
            )
            action = handler(request, body)
            result = sim.call(action)
        except ApiError as exc:
            return error_response(exc)
        return json_response(result, created if request.method == "POST" else 200)

    return run


def _ns(request: Request) -> str:
    return str(request.path_params.get("namespace", ""))


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise bad_request(f"{name} must be an integer") from exc


def _unsupported(request: Request) -> None:
    if request.query_params.get("watch") in ("true", "1"):
        raise bad_request("watch is not supported by kubesim; poll with list instead")


def collection_handler(rtype: ResourceType, all_namespaces: bool = False) -> Handler:
    """GET (list) and POST (create) on a collection."""

    def handle(request: Request, body: Any) -> Callable[[Registry], Any]:
        namespace = None if all_namespaces else _ns(request)
        if request.method == "POST":
            return lambda reg: reg.create(rtype, namespace or "", body)
        _unsupported(request)
        query = request.query_params
        limit = _int_param(request, "limit")
        return lambda reg: reg.list(
            rtype,
            namespace,
            label_selector=query.get("labelSelector"),
            field_selector=query.get("fieldSelector"),
            limit=limit,
            continue_token=query.get("continue"),
        )

    return handle


def item_handler(rtype: ResourceType) -> Handler:
    """GET, PUT, PATCH and DELETE on one object."""

    def handle(request: Request, body: Any) -> Callable[[Registry], Any]:
        namespace, name = _ns(request), str(request.path_params["name"])
        method = request.method
        if method == "PUT":
            return lambda reg: reg.update(rtype, namespace, name, body)
        if method == "PATCH":
            content_type = request.headers.get("content-type", "")
            return lambda reg: reg.patch(rtype, namespace, name, content_type, body)
        if method == "DELETE":
            options = body if isinstance(body, dict) else {}
            propagation = request.query_params.get("propagationPolicy") or options.get(
                "propagationPolicy"
            )
            preconditions = (
                options.get("preconditions")
                if isinstance(options.get("preconditions"), dict)
                else None
            )
            return lambda reg: reg.delete(
                rtype, namespace, name, propagation=propagation, preconditions=preconditions
            )
        return lambda reg: reg.get(rtype, namespace, name)

    return handle


def scale_handler(request: Request, body: Any) -> Callable[[Registry], Any]:
    """GET, PUT and PATCH on ``deployments/{name}/scale``."""
    namespace, name = _ns(request), str(request.path_params["name"])
    if request.method == "PUT":
        return lambda reg: reg.update_scale(namespace, name, body)
    if request.method == "PATCH":
        content_type = request.headers.get("content-type", "")
        return lambda reg: reg.patch_scale(namespace, name, content_type, body)
    return lambda reg: reg.get_scale(namespace, name)


def status_handler(request: Request, body: Any) -> Callable[[Registry], Any]:
    """GET ``deployments/{name}/status``."""
    namespace, name = _ns(request), str(request.path_params["name"])
    return lambda reg: reg.get(DEPLOYMENTS, namespace, name)


def pod_log(sim: Simulator) -> Endpoint:
    """GET ``pods/{name}/log`` (``container``, ``previous``, ``tailLines``): plain text."""

    async def run(request: Request) -> Response:
        namespace, name = _ns(request), str(request.path_params["name"])
        query = request.query_params
        try:
            tail = _int_param(request, "tailLines")
            pod = sim.call(lambda reg: reg.get(PODS, namespace, name))
            text = container_log(
                pod, query.get("container"), query.get("previous") in ("true", "1"), tail
            )
        except ApiError as exc:
            return error_response(exc)
        except (KeyError, NoPreviousContainer) as exc:
            return error_response(bad_request(str(exc).strip("'\"")))
        return PlainTextResponse(text)

    return run


async def healthz(request: Request) -> Response:
    """The readiness probe."""
    return PlainTextResponse("ok")


async def version(request: Request) -> Response:
    """``/version``, as ``kubectl version`` reads it."""
    return json_response(
        {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.0-kubesim",
            "platform": "linux/amd64",
        }
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer with a ``Status`` body like the apiserver's."""
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    messages = {
        404: "the server could not find the requested resource",
        405: "the server does not allow this method on the requested resource",
    }
    return JSONResponse(status_body(code, messages.get(code, str(exc))), status_code=code)


def api_routes(sim: Simulator) -> list[BaseRoute]:
    """Every Kubernetes API route the simulator serves."""
    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=_READ),
        Route("/readyz", healthz, methods=_READ),
        Route("/livez", healthz, methods=_READ),
        Route("/version", version, methods=_READ),
        Route(
            "/api/v1/namespaces",
            endpoint(sim, collection_handler(NAMESPACES), 201),
            methods=_COLLECTION_METHODS,
        ),
        Route(
            "/api/v1/namespaces/{name}",
            endpoint(sim, item_handler(NAMESPACES)),
            methods=_ITEM_METHODS,
        ),
    ]
    d = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    routes += [
        Route(f"{d}/scale", endpoint(sim, scale_handler), methods=["GET", "PUT", "PATCH"]),
        Route(f"{d}/status", endpoint(sim, status_handler), methods=_READ),
        Route("/api/v1/namespaces/{namespace}/pods/{name}/log", pod_log(sim), methods=_READ),
    ]
    for rtype in (SECRETS, PODS, DEPLOYMENTS, REPLICASETS, SERVICEACCOUNTS, ROLES, ROLEBINDINGS):
        prefix = f"/apis/{rtype.api_version}" if rtype.group else f"/api/{rtype.version}"
        base = f"{prefix}/namespaces/{{namespace}}/{rtype.plural}"
        routes += [
            Route(base, endpoint(sim, collection_handler(rtype), 201), methods=_COLLECTION_METHODS),
            Route(f"{base}/{{name}}", endpoint(sim, item_handler(rtype)), methods=_ITEM_METHODS),
            Route(
                f"{prefix}/{rtype.plural}",
                endpoint(sim, collection_handler(rtype, True)),
                methods=_READ,
            ),
        ]
    for rtype in (CLUSTERROLES, CLUSTERROLEBINDINGS):  # cluster-scoped
        base = f"/apis/{rtype.api_version}/{rtype.plural}"
        routes += [
            Route(base, endpoint(sim, collection_handler(rtype), 201), methods=_COLLECTION_METHODS),
            Route(f"{base}/{{name}}", endpoint(sim, item_handler(rtype)), methods=_ITEM_METHODS),
        ]
    return routes
