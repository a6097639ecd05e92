"""The sample app misbehaving on purpose: pod faults, the DB pool, the queue, CPU, its volume.

Served by uvicorn on loopback against the fake pod list (tests/sampleapp_support.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.sampleapp import create_app
from devstack.sampleapp.control import POOL_SIZE, Volume
from devstack.sampleapp.server import ServerThread
from tests.sampleapp_support import FakeKube

GOOD = "registry.local/web-app:1.0.0"
POLL = 0.05


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.set_pods("production", GOOD, GOOD)
    yield fake
    fake.stop()


@pytest.fixture
def app(kube: FakeKube, tmp_path: Path) -> Iterator[ServerThread]:
    volume = Volume(tmp_path / "volume", 1000)
    server = ServerThread(
        create_app(
            env="production",
            kube_url=kube.url,
            namespace="production",
            poll_interval=POLL,
            seed=3,
            volume=volume,
        )
    ).start()
    yield server
    server.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(POLL)


def hit(url: str, n: int) -> Counter[int]:
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(lambda _: client.get(url).status_code, range(n)))


def gauges(url: str) -> dict[str, dict[str, float]]:
    """``{metric: {pod-or-"": value}}`` of the app's gauges."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("sampleapp_"):
                found.setdefault(sample.name, {})[sample.labels.get("pod", "")] = sample.value
    return found


def fault(app: ServerThread, kind: str, **extra: object) -> httpx.Response:
    return httpx.post(app.url + "/_sim/faults", json={"fault": kind, **extra})


def test_a_healthy_app_reports_calm_gauges(app: ServerThread) -> None:
    g = gauges(app.url)
    assert g["sampleapp_request_queue"][""] == 0
    assert g["sampleapp_unready_pods"][""] == 0
    assert g["sampleapp_db_pool_size"] == {"web-app-0": POOL_SIZE, "web-app-1": POOL_SIZE}
    assert g["sampleapp_db_pool_in_use"] == {"web-app-0": 0, "web-app-1": 0}
    assert all(0 <= v < 0.8 for v in g["sampleapp_cpu_utilization_ratio"].values())
    assert g["sampleapp_volume_size_bytes"][""] == 1000
    assert g["sampleapp_volume_used_bytes"][""] == 0


def test_down_fault_fails_health_and_a_restart_clears_it(app: ServerThread, kube: FakeKube) -> None:
    response = fault(app, "down")
    assert response.status_code == 200
    assert response.json()["faults"] == {"web-app-0": "down", "web-app-1": "down"}
    assert httpx.get(app.url + "/health").status_code == 503
    assert hit(app.url + "/", 10) == Counter({500: 10})
    # new pods (a rollout restart) come back clean
    kube.set_pods("production", GOOD, GOOD)  # same names: still faulty
    assert httpx.get(app.url + "/health").status_code == 503
    with kube.lock:
        for i, pod in enumerate(kube.pods["production"]):
            pod["metadata"]["name"] = f"web-app-restarted-{i}"
    wait_for(lambda: httpx.get(app.url + "/health").status_code == 200)
    gauges(app.url)  # a scrape forgets the faults of pods that are gone
    assert httpx.get(app.url + "/_sim/faults").json()["faults"] == {}


def test_errors_fault_fails_a_share_and_delete_clears(app: ServerThread) -> None:
    assert fault(app, "errors", error_rate=0.5).status_code == 200
    statuses = hit(app.url + "/", 200)
    assert 0.3 < statuses[500] / 200 < 0.7
    assert httpx.get(app.url + "/health").status_code == 200
    assert httpx.delete(app.url + "/_sim/faults").json() == {"cleared": 2}
    assert hit(app.url + "/", 20) == Counter({200: 20})


def test_busy_and_pool_faults_show_in_the_gauges(app: ServerThread) -> None:
    assert fault(app, "busy", pods=["web-app-0"]).status_code == 200
    g = gauges(app.url)
    assert g["sampleapp_request_queue"][""] >= 1500
    assert g["sampleapp_cpu_utilization_ratio"]["web-app-0"] == 0.95
    assert g["sampleapp_cpu_utilization_ratio"]["web-app-1"] < 0.8
    assert fault(app, "pool-exhausted").status_code == 200
    g = gauges(app.url)
    assert g["sampleapp_db_pool_in_use"] == {"web-app-0": POOL_SIZE, "web-app-1": POOL_SIZE}
    statuses = hit(app.url + "/", 100)
    assert statuses[500] > 20


def test_slow_fault_and_busy_tag(app: ServerThread, kube: FakeKube) -> None:
    assert fault(app, "slow").status_code == 200
    started = time.perf_counter()
    assert httpx.get(app.url + "/", timeout=10).status_code == 200
    assert time.perf_counter() - started > 2
    httpx.delete(app.url + "/_sim/faults")
    kube.set_pods("production", "registry.local/web-app:2.0-busy")
    wait_for(lambda: gauges(app.url)["sampleapp_request_queue"][""] >= 1500)


def test_unknown_fault_is_refused(app: ServerThread) -> None:
    response = fault(app, "meltdown")
    assert response.status_code == 400
    assert "unknown fault" in response.json()["error"]
    assert fault(app, "errors", error_rate=3).status_code == 400


def test_unready_pods_are_counted(app: ServerThread, kube: FakeKube) -> None:
    kube.set_pods("production", GOOD, GOOD, unready=1)
    wait_for(lambda: gauges(app.url)["sampleapp_unready_pods"][""] == 1)
    assert httpx.get(app.url + "/health").status_code == 200


def test_the_volume_quota_is_enforced(app: ServerThread) -> None:
    assert httpx.put(app.url + "/upload/a.bin", content=b"x" * 600).status_code == 201
    refused = httpx.put(app.url + "/upload/b.bin", content=b"x" * 600)
    assert refused.status_code == 507
    filled = httpx.post(app.url + "/_sim/volume", json={"ratio": 0.9})
    assert filled.status_code == 200
    assert filled.json()["used_bytes"] == 900
    assert gauges(app.url)["sampleapp_volume_used_bytes"][""] == 900
    assert httpx.post(app.url + "/_sim/volume", json={"bytes": 200}).status_code == 507
    logs = Path(filled.json()["path"]) / "logs"
    assert len(list(logs.iterdir())) == 1  # a log file the disk-full runbook can clear
    assert httpx.delete(app.url + "/_sim/volume").json()["used_bytes"] == 0


def test_a_leak_grows_the_pods_memory_and_a_restarted_pod_runs_clean(
    app: ServerThread, kube: FakeKube
) -> None:
    from devstack.sampleapp.control import BASE_MEMORY_BYTES, MEMORY_LIMIT_BYTES

    calm = gauges(app.url)
    assert calm["sampleapp_memory_bytes"] == {"web-app-0": BASE_MEMORY_BYTES} | {
        "web-app-1": BASE_MEMORY_BYTES
    }
    assert set(calm["sampleapp_memory_limit_bytes"].values()) == {MEMORY_LIMIT_BYTES}
    assert fault(app, "leak", pods=["web-app-0"], leak_mb_per_s=100).status_code == 200
    wait_for(lambda: gauges(app.url)["sampleapp_memory_bytes"]["web-app-0"] > BASE_MEMORY_BYTES)
    first = gauges(app.url)["sampleapp_memory_bytes"]["web-app-0"]
    time.sleep(0.2)
    assert gauges(app.url)["sampleapp_memory_bytes"]["web-app-0"] > first  # it keeps growing
    assert gauges(app.url)["sampleapp_memory_bytes"]["web-app-1"] == BASE_MEMORY_BYTES
    assert httpx.get(app.url + "/health").status_code == 200
    with kube.lock:
        kube.pods["production"][0]["metadata"]["name"] = "web-app-restarted"
    wait_for(lambda: "web-app-restarted" in gauges(app.url)["sampleapp_memory_bytes"])
    assert gauges(app.url)["sampleapp_memory_bytes"]["web-app-restarted"] == BASE_MEMORY_BYTES
    assert fault(app, "leak", leak_mb_per_s=0).status_code == 400


def test_the_volume_lists_its_directories_and_deletes_only_named_logs(app: ServerThread) -> None:
    old = httpx.post(app.url + "/_sim/volume", json={"bytes": 300, "age_s": 7200})
    assert old.status_code == 200
    upload = httpx.post(app.url + "/_sim/volume", json={"bytes": 200, "dir": "uploads"})
    listing = httpx.get(app.url + "/_sim/volume").json()
    assert listing["dirs"] == upload.json()["dirs"]
    assert listing["dirs"]["logs"] == {"bytes": 300, "files": 1}
    assert listing["dirs"]["uploads"] == {"bytes": 200, "files": 1}
    (log,) = listing["logs"]
    assert log["bytes"] == 300 and log["age_s"] >= 7199
    delete = app.url + "/_sim/volume/logs/delete"
    refused = httpx.post(delete, json={"names": [log["name"], "../uploads/x"]})
    assert refused.status_code == 400
    assert httpx.get(app.url + "/_sim/volume").json()["used_bytes"] == 500
    assert httpx.post(delete, json={"names": "all"}).status_code == 400
    done = httpx.post(delete, json={"names": [log["name"]]}).json()
    assert done["deleted"] == [log["name"]] and done["used_bytes"] == 200
    assert httpx.post(app.url + "/_sim/volume", json={"bytes": 10, "dir": "/"}).status_code == 400


def traffic(app: ServerThread, level: object) -> httpx.Response:
    return httpx.post(app.url + "/_sim/traffic", json={"level": level})


def test_traffic_is_spread_over_the_ready_pods_and_more_pods_carry_it(
    app: ServerThread, kube: FakeKube
) -> None:
    """A traffic level of 1.9 pods' worth of CPU on two pods: each at 95% with a backlog of
    1500 (the queue and CPU alerts' territory); on four pods each carries 47.5% and nothing
    queues; the per-pod request counter shows every Ready pod serving."""
    assert traffic(app, 1.9).json()["cpu_per_pod"] == pytest.approx(0.95)
    g = gauges(app.url)
    assert g["sampleapp_cpu_utilization_ratio"] == {
        "web-app-0": pytest.approx(0.95),
        "web-app-1": pytest.approx(0.95),
    }
    assert g["sampleapp_request_queue"][""] >= 3000
    kube.set_pods("production", GOOD, GOOD, GOOD, GOOD)

    # The pods' gauges follow the pod list on the app's next refresh: all four at 47.5%.
    def spread() -> bool:
        cpu = gauges(app.url)["sampleapp_cpu_utilization_ratio"]
        return len(cpu) == 4 and all(v == pytest.approx(0.475) for v in cpu.values())

    wait_for(spread, timeout=15)
    g = gauges(app.url)
    assert g["sampleapp_request_queue"][""] < 1000
    hit(app.url + "/", 200)
    served = {
        s.labels["pod"]: s.value
        for family in text_string_to_metric_families(httpx.get(app.url + "/metrics").text)
        for s in family.samples
        if s.name == "sampleapp_pod_requests_total"
    }
    assert set(served) == {f"web-app-{i}" for i in range(4)} and sum(served.values()) == 200
    cleared = httpx.delete(app.url + "/_sim/traffic").json()
    assert (cleared["level"], cleared["cpu_per_pod"], cleared["queue_per_pod"]) == (0, 0, 0)


def test_a_bad_traffic_level_is_refused(app: ServerThread) -> None:
    for level in (-1, "lots", True, 1000):
        refused = traffic(app, level)
        assert refused.status_code == 400 and "level" in refused.json()["error"]
    assert httpx.get(app.url + "/_sim/traffic").json()["level"] == 0
