"""The sample app, served by uvicorn on loopback, against a tiny fake pod-list server.

The fake answers ``GET /api/v1/namespaces/{ns}/pods`` like the Kubernetes API (only what the
app reads); switching its image is what a rollout in the simulator does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.loadgen import run_load
from devstack.sampleapp import create_app
from devstack.sampleapp.server import ServerThread
from tests.sampleapp_support import FakeKube

GOOD = "registry.local/web-app:1.0.0"
NEXT = "registry.local/web-app:1.1.0"
POLL = 0.05


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.set_pods("staging", GOOD, GOOD)
    fake.set_pods("production", GOOD, GOOD)
    yield fake
    fake.stop()


AppFactory = Callable[[str], ServerThread]


@pytest.fixture
def start_app(kube: FakeKube) -> Iterator[AppFactory]:
    servers: list[ServerThread] = []

    def start(env: str) -> ServerThread:
        app = create_app(env=env, kube_url=kube.url, namespace=env, poll_interval=POLL, seed=7)
        server = ServerThread(app).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(POLL)


def hit(url: str, n: int) -> Counter[int]:
    with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(lambda _: client.get(url).status_code, range(n)))


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_healthy_image_serves_200(kube: FakeKube, start_app: AppFactory) -> None:
    app = start_app("staging")
    assert hit(app.url + "/", 30) == Counter({200: 30})
    health = httpx.get(app.url + "/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["image"] == GOOD
    assert kube.selectors == {"app=web-app"}


def test_broken_image_fails_root_and_health(kube: FakeKube, start_app: AppFactory) -> None:
    app = start_app("staging")
    assert httpx.get(app.url + "/health").status_code == 200
    kube.set_pods("staging", "registry.local/web-app:1.1.0-broken")
    wait_for(lambda: httpx.get(app.url + "/health").status_code == 503)
    assert httpx.get(app.url + "/health").json()["image"].endswith("-broken")
    assert hit(app.url + "/", 30) == Counter({500: 30})
    # and a good release recovers it
    kube.set_pods("staging", NEXT)
    wait_for(lambda: httpx.get(app.url + "/health").status_code == 200)
    assert hit(app.url + "/", 10) == Counter({200: 10})


def test_prodbroken_fails_a_share_of_production_only(kube: FakeKube, start_app: AppFactory) -> None:
    image = "registry.local/web-app:1.2.0-prodbroken"
    kube.set_pods("staging", image)
    kube.set_pods("production", image)
    staging, production = start_app("staging"), start_app("production")

    assert hit(staging.url + "/", 200) == Counter({200: 200})
    statuses = hit(production.url + "/", 300)
    assert set(statuses) == {200, 500}
    assert 0.18 <= statuses[500] / 300 <= 0.42
    # the health check does not see it: only metrics under load do
    assert all(httpx.get(production.url + "/health").status_code == 200 for _ in range(20))


def test_slow_image_adds_latency_without_blocking(kube: FakeKube, start_app: AppFactory) -> None:
    kube.set_pods("staging", "registry.local/web-app:1.3.0-slow")
    app = start_app("staging")
    started = time.perf_counter()
    assert hit(app.url + "/", 8) == Counter({200: 8})  # 8 concurrent requests
    elapsed = time.perf_counter() - started
    # Served together: one after the other would take 8 x 2.5 s = 20 s. The bound is loose
    # on purpose (a loaded CI machine), it checks concurrency, not speed.
    assert 2.2 < elapsed < 10.0, elapsed
    assert httpx.get(app.url + "/health", timeout=5).status_code == 200


def test_traffic_is_mixed_during_a_rollout(kube: FakeKube, start_app: AppFactory) -> None:
    kube.set_pods("staging", GOOD, NEXT, NEXT)
    app = start_app("staging")
    with httpx.Client() as client:
        served = Counter(client.get(app.url + "/").headers["X-Image"] for _ in range(60))
    assert set(served) == {GOOD, NEXT}
    info = scrape(app.url)
    assert info[("sampleapp_info", (("env", "staging"), ("image", GOOD)))] == 1
    assert info[("sampleapp_ready_pods", (("image", NEXT),))] == 2


def test_no_ready_pod_answers_503(kube: FakeKube, start_app: AppFactory) -> None:
    kube.set_pods("staging", GOOD, ready=False)
    app = start_app("staging")
    assert httpx.get(app.url + "/").status_code == 503
    assert httpx.get(app.url + "/health").status_code == 503


def test_unreachable_simulator_keeps_last_pods_and_logs_once(
    kube: FakeKube, start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = start_app("staging")
    caplog.set_level(logging.INFO, logger="devstack.sampleapp.pods")
    kube.stop()
    time.sleep(POLL * 10)
    assert hit(app.url + "/", 10) == Counter({200: 10})
    assert httpx.get(app.url + "/health").status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "keeping the last 2 known pod(s)" in warnings[0].getMessage()


def test_metrics_count_statuses_by_path(kube: FakeKube, start_app: AppFactory) -> None:
    kube.set_pods("production", "registry.local/web-app:1.4.0-flaky")
    app = start_app("production")
    statuses = hit(app.url + "/", 200)
    for _ in range(3):
        httpx.get(app.url + "/health")
    httpx.get(app.url + "/nope")

    samples = scrape(app.url)

    def requests(path: str, status: str) -> float:
        return samples.get(("http_requests_total", (("path", path), ("status", status))), 0.0)

    assert statuses[500] > 0
    assert requests("/", "200") == statuses[200]
    assert requests("/", "500") == statuses[500]
    assert requests("/health", "200") == 3
    assert requests("other", "404") == 1
    assert requests("/metrics", "200") == 0  # the scrape counts once it has been answered
    count = samples[("http_request_duration_seconds_count", (("path", "/"),))]
    assert count == 200
    buckets = [
        value
        for (name, labels), value in sorted(
            samples.items(), key=lambda item: float(dict(item[0][1]).get("le", "0"))
        )
        if name == "http_request_duration_seconds_bucket" and dict(labels).get("path") == "/"
    ]
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[-1] == count  # the +Inf bucket holds every request
    image = "registry.local/web-app:1.4.0-flaky"
    assert samples[("sampleapp_info", (("env", "production"), ("image", image)))] == 1
    scraped_again = scrape(app.url)
    assert scraped_again[("http_requests_total", (("path", "/metrics"), ("status", "200")))] == 1
    assert (
        scraped_again[("http_requests_total", (("path", "/"), ("status", "200")))] == statuses[200]
    )


def test_loadgen_counts_statuses_against_the_app(kube: FakeKube, start_app: AppFactory) -> None:
    kube.set_pods("staging", "registry.local/web-app:1.5.0-broken")
    app = start_app("staging")
    stats = run_load(f"{app.url}/", rps=50, duration=1.0)
    assert 0 < stats.sent <= 51  # paced: never more than rps x duration (+1)
    assert stats.by_status == {"500": stats.sent}
    assert stats.error_rate == 1.0
    assert len(stats.latencies_s) == stats.sent
    assert 0 < stats.percentile(50) <= stats.percentile(95) <= max(stats.latencies_s)
    assert stats.summary()["by_status"] == {"500": stats.sent}


@pytest.mark.parametrize("url", ["http://10.1.2.3/", "http://example.com/", "ftp://127.0.0.1/"])
def test_loadgen_refuses_non_loopback_targets(url: str) -> None:
    with pytest.raises(ValueError):
        run_load(url, rps=1, duration=1)


def test_loadgen_stops_on_its_event() -> None:
    stop = threading.Event()
    stop.set()
    assert run_load("http://127.0.0.1:9/", rps=10, duration=0, stop_event=stop).sent == 0
    with pytest.raises(ValueError, match="stop_event"):
        run_load("http://127.0.0.1:9/", rps=10, duration=0)
