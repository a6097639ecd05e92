"""The bake's probe figures and review decisions, the bake loop with missing data, the probe."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from blocks.kube import KubeEnvironment
from decisions.bake_review import (
    MAX_PROBE_RPS,
    BakeReview,
    bake_action,
    percentile,
    review_outcome,
    summarize_probe,
    validate_probe,
)
from decisions.deploy import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    BakeSample,
    BakeThresholds,
    Measurement,
    judge_sample,
)
from opsflows.errors import ConfigurationError
from procedures.bake_review import BakeReviewInput, review_description, traffic_markdown
from tasks.bake import BakeReport, run_bake
from tasks.probe_traffic import TrafficProbe

LIMITS = BakeThresholds()
GOOD = BakeSample(200, 0.0, 0.02, 2, 2, 0)
NO_DATA = BakeSample(200, None, None, 2, 2, 0, (("error_rate", "query failed"),))
NOWHERE = "http://127.0.0.1:9"
ENV = KubeEnvironment(
    environment="unit",
    api_url=NOWHERE,
    namespace="unit",
    service_url=NOWHERE,
    prometheus_url=NOWHERE,
)


def test_probe_summary_counts_5xx_and_no_answer_as_errors() -> None:
    summary = summarize_probe([200, 200, 500, None, 404], [0.1, 0.2, 0.3, 0.4], 2.0, 5.0)
    assert (summary.requests, summary.errors) == (5, 2)
    assert summary.error_rate == pytest.approx(0.4)
    assert summary.p95_latency_s == 0.4
    assert summary.as_dict()["error_rate"] == 0.4
    assert "5 requests" in summary.describe()
    empty = summarize_probe([], [], 0.0, 5.0)
    assert empty.error_rate is None and empty.p95_latency_s is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([], 95) is None


def test_only_a_fail_rolls_back_at_once_and_only_inconclusive_asks() -> None:
    assert bake_action(PASS) == "keep"
    assert bake_action(FAIL) == "roll back"
    assert bake_action(INCONCLUSIVE) == "ask"


def test_only_a_named_approval_keeps_an_inconclusive_release() -> None:
    kept = review_outcome(BakeReview(True, "alice", "checked the dashboards"), 900)
    assert kept.keep and kept.why == "inconclusive bake accepted by alice: checked the dashboards"
    rejected = review_outcome(BakeReview(False, "bob", ""), 900)
    assert not rejected.keep and rejected.why == "inconclusive bake rejected by bob"
    assert not review_outcome(BakeReview(True, "  ", "ok"), 900).keep
    timed_out = review_outcome(None, 900)
    assert not timed_out.keep and "within 900s" in timed_out.why


def test_probe_settings_are_bounded() -> None:
    validate_probe(0, 1)
    validate_probe(MAX_PROBE_RPS, 900)
    for rps, timeout in ((-1, 900), (MAX_PROBE_RPS + 1, 900), (5, 0)):
        with pytest.raises(ConfigurationError):
            validate_probe(rps, timeout)
    with pytest.raises(ConfigurationError):
        TrafficProbe("ftp://example", 5, 10)
    with pytest.raises(ConfigurationError):
        TrafficProbe(NOWHERE, MAX_PROBE_RPS * 2, 10)


def test_the_review_form_requires_the_approver() -> None:
    with pytest.raises(ValidationError):
        BakeReviewInput(approve=True)
    with pytest.raises(ValidationError):
        BakeReviewInput(approve=True, approver="")
    assert BakeReviewInput(approve=True, approver="alice").reason == ""


def test_missing_data_does_not_stop_the_bake_but_a_failure_does() -> None:
    no_data = judge_sample(NO_DATA, LIMITS)
    good = judge_sample(GOOD, LIMITS)
    slow = judge_sample(BakeSample(200, 0.0, 2.5, 2, 2, 0), LIMITS)
    probe = summarize_probe([200] * 4, [0.01] * 4, 1.0, 5.0)

    def bake(*rounds: Sequence[Measurement]) -> BakeReport:
        it = iter(rounds)
        return run_bake(
            ENV,
            LIMITS,
            duration_s=0.3,
            interval_s=0.01,
            since=0.0,
            measure_fn=lambda *args: list(next(it)),
            probe_figures=lambda: probe,
        )

    late_failure = bake(no_data, slow, good)
    assert late_failure.verdict == FAIL and len(late_failure.rounds) == 2
    assert any("p95_latency_s = 2.5" in r for r in late_failure.reasons())
    rounds = [no_data, *[good] * 200]
    inconclusive = bake(*rounds)
    assert inconclusive.verdict == INCONCLUSIVE
    assert len(inconclusive.rounds) > 2
    rows = inconclusive.rows()
    assert {r["probe"] for r in rows if r["measurement"] == "error_rate"} == {"0 (4 requests)"}
    markdown = traffic_markdown("img:1", "unit", inconclusive, probe)
    assert "synthetic probe" in markdown and "| error rate | 0 | 0 |" in markdown
    description = review_description("img:1", "unit", inconclusive, probe, 60)
    assert "error_rate = no data" in description and "**Approve** keeps" in description
    assert "No answer within 60 s rolls back" in description


class _App(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        code = 500 if self.server.fail else 200
        self.server.paths.append(self.path)
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def app() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    server.fail = False
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_probe_is_paced_bounded_and_stops_by_itself(app: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{app.server_address[1]}"
    probe = TrafficProbe(url, rps=20, max_duration_s=0.5).start()
    probe._thread.join(timeout=5)  # it ends on its own once its time is up
    assert not probe._thread.is_alive()
    summary = probe.stop()
    assert 5 <= summary.requests <= probe.max_requests == 10
    assert summary.errors == 0 and summary.p95_latency_s is not None
    assert set(app.paths) == {"/"}


def test_probe_counts_errors_and_can_be_stopped_early(app: ThreadingHTTPServer) -> None:
    app.fail = True
    url = f"http://127.0.0.1:{app.server_address[1]}/"
    with TrafficProbe(url, rps=20, max_duration_s=60) as probe:
        threading.Event().wait(0.3)
    summary = probe.snapshot()
    assert not probe._thread.is_alive()
    assert summary.requests >= 2 and summary.errors == summary.requests
    assert summary.duration_s < 5


def test_probe_records_no_answer_as_an_error() -> None:
    with TrafficProbe(NOWHERE, rps=20, max_duration_s=0.3, timeout_s=1) as probe:
        threading.Event().wait(0.4)
    summary = probe.snapshot()
    assert summary.requests >= 1 and summary.errors == summary.requests
    assert "ConnectError" in summary.last_error
