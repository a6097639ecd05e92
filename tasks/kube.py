"""Kubernetes steps through the official client. ``ApiException`` is translated here."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prefect import task

from blocks.kube import KubeEnvironment
from opsflows import retry
from opsflows.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    OpsError,
    PermanentError,
    ServiceUnavailable,
    Throttled,
    scrub,
)


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return scrub(str(body.get("message") or exc.reason or ""))
    except (ValueError, TypeError):
        return scrub(str(exc.reason or ""))


def translate(exc: Exception, env: KubeEnvironment, action: str) -> OpsError:
    """Map an ``ApiException`` or a connection error to the opsflows tree."""
    where = f"{env.environment} ({env.namespace}/{env.deployment})"
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = _status_message(exc)
        if status == 404:
            return NotFoundError(f"{action} in {where}: not found: {message}")
        if status == 409:
            return ConflictError(
                f"{action} in {where}: conflict: {message}", hint="re-read the object and retry"
            )
        if status in (401, 403):
            return AuthenticationError(
                f"{action} in {where}: the API refused our credentials ({status})",
                hint="check the token in the KubeEnvironment block",
            )
        if status == 429:
            return Throttled(f"{action} in {where}: API server throttled the request")
        if status >= 500 or status == 0:
            return ServiceUnavailable(f"{action} in {where}: API server answered {status}")
        if status in (400, 422):
            return ConfigurationError(f"{action} in {where}: rejected: {message}")
        return PermanentError(f"{action} in {where}: API error {status}: {message}")
    return ServiceUnavailable(
        f"{action} in {where}: cannot reach the Kubernetes API at {env.api_url}",
        hint="is the API server up and api_url in the block right?",
    )


@contextlib.contextmanager
def kube_errors(env: KubeEnvironment, action: str) -> Iterator[None]:
    """Translate client errors raised inside the block."""
    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate(exc, env, action) from exc


def apps_api(env: KubeEnvironment) -> client.AppsV1Api:
    return client.AppsV1Api(env.api_client())


def core_api(env: KubeEnvironment) -> client.CoreV1Api:
    return client.CoreV1Api(env.api_client())


@task(name="read deployment", **retry.NETWORK)
def read_deployment(env: KubeEnvironment) -> dict[str, Any]:
    """The Deployment's image, revision, generation and replica counts."""
    with kube_errors(env, "read deployment"):
        dep: Any = apps_api(env).read_namespaced_deployment(env.deployment, env.namespace)
    containers = dep.spec.template.spec.containers
    image = next((c.image for c in containers if c.name == env.container), containers[0].image)
    status = dep.status
    return {
        "environment": env.environment,
        "image": image,
        "revision": (dep.metadata.annotations or {}).get("deployment.kubernetes.io/revision"),
        "generation": dep.metadata.generation,
        "observed_generation": status.observed_generation,
        "replicas": dep.spec.replicas,
        "ready": status.ready_replicas or 0,
        "available": status.available_replicas or 0,
    }
