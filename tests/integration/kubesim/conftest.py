"""Fixtures for the Kubernetes simulator tests, driven over HTTP by the official client.

One simulator is served in-process for each test module (fast kubelet timings); every test
works in its own namespace, so tests do not see each other's objects. Only the ``/_sim`` admin
API and the ``/_sink`` notification sink are called with plain httpx, since they are not
Kubernetes APIs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest
from kubernetes import client

from devstack.kubesim import SimServer, run_in_thread
from tests.kubesim_support import TIMING

_names = itertools.count(1)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    server = run_in_thread(config=TIMING)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_client(sim: SimServer) -> Iterator[client.ApiClient]:
    with client.ApiClient(client.Configuration(host=sim.url)) as api:
        yield api


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="module")
def http(sim: SimServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=5) as plain:
        yield plain


@pytest.fixture
def admin(http: httpx.Client) -> Iterator[httpx.Client]:
    """Plain HTTP for ``/_sim`` and ``/_sink``; injected faults are cleared afterwards."""
    yield http
    http.delete("/_sim/faults")


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:
    name = f"t{next(_names)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name
