"""A real Prometheus (Debian's) scraping two sample apps, queried over its HTTP API.

Run as root, Prometheus runs as the stack's unprivileged OS user exactly like the
launcher runs it (``runuser -u <user> --``); the user is created if missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from decisions.alert_catalog import rules
from devstack import postgres, prometheus
from devstack.loadgen import run_load
from devstack.sampleapp import create_app
from devstack.sampleapp.server import ServerThread
from opsflows.settings import Settings

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus binary not installed (apt-get install -y prometheus)",
)

OS_USER = Settings().os_user  # the test stack's own user (tests/conftest.py)
GOOD = "registry.local/web-app:1.0.0"
ENVS = ("staging", "production")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_os_user() -> str | None:
    """The user Prometheus runs as: the stack's OS user when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    postgres.ensure_os_user(OS_USER)
    return OS_USER


@dataclass
class Prom:
    url: str
    state_dir: Path
    apps: dict[str, ServerThread]
    images: dict[str, str] = field(default_factory=dict)

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single sample's value (NaN included), or None when the result is empty."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def pod_list_for(images: dict[str, str]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        namespace = request.url.path.split("/")[4]
        items = [
            {
                "metadata": {"name": f"web-app-{i}"},
                "spec": {"containers": [{"name": "web", "image": images[namespace]}]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
            for i in range(2)
        ]
        return httpx.Response(200, json={"kind": "PodList", "items": items})

    return handler


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def prom() -> Iterator[Prom]:
    user = ensure_os_user()
    tmp = Path(tempfile.mkdtemp(prefix="opsflows-prometheus-"))
    tmp.chmod(0o755)  # the unprivileged user must reach state_dir inside it
    images = dict.fromkeys(ENVS, GOOD)
    transport = httpx.MockTransport(pod_list_for(images))
    apps = {
        env: ServerThread(
            create_app(
                env=env,
                kube_url="http://kube.test",
                namespace=env,
                poll_interval=0.1,
                transport=transport,
                seed=1,
            )
        ).start()
        for env in ENVS
    }
    state_dir = tmp / "prometheus"
    config = prometheus.write_config(
        state_dir,
        {env: f"127.0.0.1:{app.port}" for env, app in apps.items()},
        prometheus.RULES_PATH,
        owner=user,
    )
    port = free_port()
    argv = prometheus.command(config, prometheus.data_dir(state_dir), "127.0.0.1", port)
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, 30, "Prometheus /-/ready")
        yield Prom(url=url, state_dir=state_dir, apps=apps, images=images)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        for app in apps.values():
            app.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def load(prom: Prom) -> Iterator[None]:
    """Steady traffic on both apps for the whole module."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_load, args=(f"{app.url}/", 25, 60, stop), daemon=True)
        for app in prom.apps.values()
    ]
    for thread in threads:
        thread.start()
    yield
    stop.set()
    for thread in threads:
        thread.join(15)


def test_config_is_valid_and_runs_unprivileged(prom: Prom) -> None:
    config = prom.state_dir / prometheus.CONFIG_NAME
    text = config.read_text()
    assert "scrape_interval: 1s" in text
    assert "evaluation_interval: 1s" in text
    check = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(rules())} rules found" in check.stdout
    if os.geteuid() == 0:
        owner = pwd.getpwuid(os.stat(prometheus.data_dir(prom.state_dir) / "wal").st_uid)
        assert owner.pw_name == OS_USER  # the TSDB was written by the unprivileged user


def test_each_env_is_one_target_labelled_env(prom: Prom) -> None:
    def all_up() -> bool:
        return {r["metric"]["env"] for r in prom.query('up{job="web-app"} == 1')} == set(ENVS)

    wait_for(all_up, 10, "both targets up")
    for env, app in prom.apps.items():
        (sample,) = prom.query(f'up{{job="web-app", env="{env}"}}')
        assert sample["metric"]["instance"] == f"127.0.0.1:{app.port}"


def test_alert_rules_are_loaded(prom: Prom) -> None:
    prometheus.reload(prom.url)  # --web.enable-lifecycle is on
    body = httpx.get(f"{prom.url}/api/v1/rules", params={"type": "alert"}).json()
    loaded = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in loaded} == {r.alert for r in rules()}
    for rule in loaded:
        assert rule["labels"]["severity"] in {"P1", "P2", "P3"}
        assert rule["labels"]["environment"] == "{{ $labels.env }}"
        assert rule["health"] == "ok", rule
    by_name = {(r["name"], r["labels"]["severity"]): r for r in loaded}
    assert "0.005" in by_name[("HighErrorRate", "P3")]["query"]
    assert "> 2" in by_name[("HighLatencyP95", "P2")]["query"]


def test_error_rate_rises_after_a_broken_release(prom: Prom, load: None) -> None:
    query = prometheus.error_rate_query("production")

    def measured_zero() -> bool:
        return prom.value(query) == 0.0

    wait_for(measured_zero, 15, "a 0% error rate measured on good traffic")
    prom.images["production"] = "registry.local/web-app:1.1.0-broken"

    def high() -> bool:
        rate = prom.value(query)
        return rate is not None and rate > 0.2

    wait_for(high, 15, "the production error rate to rise")
    assert prom.value(prometheus.error_rate_query("staging")) == 0.0

    def alerting() -> bool:
        alerts = httpx.get(f"{prom.url}/api/v1/alerts").json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "HighErrorRate"
            and a["labels"]["environment"] == "production"
            and a["labels"]["severity"] == "P2"  # 100% failing: the P2 band
            for a in alerts
        )

    wait_for(alerting, 5, "HighErrorRate to be pending or firing")


def test_p95_rises_after_a_slow_release(prom: Prom, load: None) -> None:
    query = prometheus.p95_latency_query("staging")

    def fast() -> bool:
        p95 = prom.value(query)
        return p95 is not None and p95 < 0.1

    wait_for(fast, 15, "a fast p95 measured on good traffic")
    prom.images["staging"] = "registry.local/web-app:1.2.0-slow"

    def slow() -> bool:
        p95 = prom.value(query)
        return p95 is not None and p95 > 2

    wait_for(slow, 15, "the staging p95 to exceed 2 s")
