"""What the incident benchmark reads of the alert pipeline: the settings its figures depend
on (Prometheus' scrape and evaluation intervals, the rule's ``for:``, Alertmanager's
``group_wait``/``group_interval``), read from the running services, and the alert's samples."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import yaml

from bench.common import stack_info

INFO = stack_info()
RULE = "ServiceDown"
BLACKBOX_JOB = "blackbox-http"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def duration_s(text: str) -> float:
    """Seconds of a Prometheus/Alertmanager duration (``5s``, ``1m30s``, ``500ms``)."""
    parts = _DURATION.findall(str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (Prometheus' nanoseconds cut to micro)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", stamp.replace("Z", "+00:00"))
    return datetime.fromisoformat(text).timestamp()


def _get(url: str, **params: Any) -> Any:
    response = httpx.get(url, params=params, timeout=10)
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class PipelineSettings:
    """What the running Prometheus and Alertmanager are configured with (seconds)."""

    scrape_interval_s: float
    evaluation_interval_s: float
    rule_for_s: float
    group_wait_s: float
    group_interval_s: float

    @property
    def bound_s(self) -> float:
        """Worst case fault -> notification: scrape + eval + for (+ eval) + group_wait."""
        return (
            self.scrape_interval_s
            + 2 * self.evaluation_interval_s
            + self.rule_for_s
            + self.group_wait_s
        )

    def figures(self) -> dict[str, float]:
        return {
            "scrape_interval_s": self.scrape_interval_s,
            "evaluation_interval_s": self.evaluation_interval_s,
            "rule_for_s": self.rule_for_s,
            "group_wait_s": self.group_wait_s,
            "group_interval_s": self.group_interval_s,
            "pipeline_bound_s": round(self.bound_s, 3),
        }


def read_settings() -> PipelineSettings:
    """The settings of the running services, as they report them."""
    config = yaml.safe_load(_get(INFO.prometheus_url + "/api/v1/status/config")["data"]["yaml"])
    defaults = config.get("global", {})
    jobs = {job["job_name"]: job for job in config.get("scrape_configs", [])}
    if BLACKBOX_JOB not in jobs:
        raise SystemExit(f"Prometheus has no {BLACKBOX_JOB} job: is monitoring on?")
    scrape = jobs[BLACKBOX_JOB].get("scrape_interval", defaults.get("scrape_interval", "1m"))
    groups = _get(INFO.prometheus_url + "/api/v1/rules", type="alert")["data"]["groups"]
    found = [(g, r) for g in groups for r in g["rules"] if r["name"] == RULE]
    if not found:
        raise SystemExit(f"Prometheus has no {RULE} rule")
    rule_group, rule = found[0]
    status = _get(INFO.alertmanager_url + "/api/v2/status")
    route = yaml.safe_load(status["config"]["original"]).get("route", {})
    return PipelineSettings(
        scrape_interval_s=duration_s(scrape),
        evaluation_interval_s=float(rule_group["interval"]),
        rule_for_s=float(rule["duration"]),
        group_wait_s=duration_s(route.get("group_wait", "30s")),
        group_interval_s=duration_s(route.get("group_interval", "5m")),
    )


def active_alert(env: str) -> dict[str, Any] | None:
    """Prometheus' pending or firing ServiceDown of ``env``, if any."""
    alerts = _get(INFO.prometheus_url + "/api/v1/alerts")["data"]["alerts"]
    for found in alerts:
        labels = found.get("labels", {})
        if labels.get("alertname") == RULE and labels.get("environment") == env:
            return dict(found)
    return None


def alert_samples(env: str, state: str, since: float) -> list[float]:
    """Timestamps of the raw ``ALERTS`` samples of ``env``'s ServiceDown in ``state`` since
    ``since`` (one per rule evaluation)."""
    selector = f'ALERTS{{alertname="{RULE}",environment="{env}",alertstate="{state}"}}'
    window = max(60, int(time.time() - since) + 30)
    data = _get(INFO.prometheus_url + "/api/v1/query", query=f"{selector}[{window}s]")["data"]
    return sorted(
        float(at) for series in data["result"] for at, _ in series["values"] if float(at) >= since
    )
