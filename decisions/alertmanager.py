"""Pure decisions of the Alertmanager receiver: is a notification authentic and well formed?

Alertmanager's ``webhook_configs`` POST one JSON document per notification of an alert group
(format version 4)::

    {"version": "4", "status": "firing"|"resolved", "groupKey": "...", "receiver": "...",
     "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...},
     "externalURL": "...", "truncatedAlerts": 0,
     "alerts": [{"status": "firing"|"resolved", "fingerprint": "...", "labels": {...},
                 "annotations": {...}, "startsAt": RFC 3339, "endsAt": RFC 3339,
                 "generatorURL": "..."}]}

with ``http_config.authorization`` credentials as ``Authorization: Bearer <token>``.
``deployments/alert_receiver.py`` adds the I/O; everything here works on bytes and frozen
dataclasses, so it is unit-tested without services. Outcomes, in the order checked (the
first failure wins, nothing is recorded):

    401  Authorization missing, not Bearer, or the wrong token (constant-time compare)
    413  body over the size limit
    400  not a JSON object; version is not "4"; status, groupKey or alerts missing or
         malformed (each alert needs a fingerprint, string labels, RFC 3339 times)
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from decisions.webhook import Rejected

#: A group of a few hundred alerts is ~100 KiB; Alertmanager's ``max_alerts`` truncates more.
MAX_BODY_BYTES = 1024 * 1024
MAX_GROUP_KEY = 4096
FIRING, RESOLVED = "firing", "resolved"
#: Severities the alert rules use, most severe first.
SEVERITIES = ("P1", "P2", "P3", "P4")
#: An alert without a known ``severity`` label (a rule's mistake) is treated as P2: someone
#: hears of it in #incidents at once and is paged if nobody acknowledges, never silence.
UNLABELLED_SEVERITY = "P2"
_FINGERPRINT = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True)
class Alert:
    """One alert of a group, as Alertmanager reported it."""

    fingerprint: str
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None
    generator_url: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", self.fingerprint)

    @property
    def severity(self) -> str:
        return severity_of(self.labels.get("severity"))

    def as_record(self) -> dict[str, Any]:
        """The alert as stored with its incident (JSON-ready)."""
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": self.starts_at.isoformat(),
            "endsAt": self.ends_at.isoformat() if self.ends_at else None,
            "generatorURL": self.generator_url,
        }


@dataclass(frozen=True)
class AlertGroup:
    """One notification: the group's status, key and alerts."""

    status: str
    group_key: str
    alerts: tuple[Alert, ...]
    receiver: str = ""
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)
    common_annotations: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated: int = 0

    @property
    def firing(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.status == FIRING)

    def _leading(self) -> Alert:
        """The most severe firing alert (or of all, once resolved): it names the incident."""
        pool = self.firing or self.alerts
        return min(pool, key=lambda a: SEVERITIES.index(a.severity))

    @property
    def severity(self) -> str:
        return self._leading().severity

    def label(self, name: str) -> str | None:
        """A label common to the group, else the leading alert's."""
        return self.common_labels.get(name) or self._leading().labels.get(name) or None

    @property
    def title(self) -> str:
        summary = self.common_annotations.get("summary") or self._leading().annotations.get(
            "summary"
        )
        names = sorted({a.name for a in self.alerts})
        head = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
        return f"{head}: {summary}" if summary else head


def severity_of(label: str | None) -> str:
    """``P1``..``P4`` from a severity label (any case); the unlabelled default otherwise."""
    value = (label or "").strip().upper()
    return value if value in SEVERITIES else UNLABELLED_SEVERITY


def bearer_valid(expected: bytes, header: str | None) -> bool:
    """Constant-time check of ``Authorization: Bearer <token>`` against ``expected``."""
    if not expected or not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(expected, token.strip().encode("utf-8", "replace"))


def _time(value: Any, what: str, optional: bool = False) -> datetime | None:
    if optional and value in (None, ""):
        return None
    if not isinstance(value, str):
        raise Rejected(400, f"{what} must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()))
    except ValueError as exc:
        raise Rejected(400, f"{what} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise Rejected(400, f"{what} has no time zone")
    # Alertmanager sends Go's zero time as the end of an alert still firing.
    return None if optional and parsed.year == 1 else parsed


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise Rejected(400, f"{what} must map strings to strings")
    return dict(value)


def _alert(raw: Any, index: int) -> Alert:
    where = f"alerts[{index}]"
    if not isinstance(raw, Mapping):
        raise Rejected(400, f"{where} must be an object")
    status = raw.get("status")
    if status not in (FIRING, RESOLVED):
        raise Rejected(400, f"{where}.status must be 'firing' or 'resolved'")
    fingerprint = raw.get("fingerprint")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise Rejected(400, f"{where}.fingerprint is missing or malformed")
    starts = _time(raw.get("startsAt"), f"{where}.startsAt")
    assert starts is not None
    url = raw.get("generatorURL")
    return Alert(
        fingerprint=fingerprint,
        status=status,
        labels=_strings(raw.get("labels"), f"{where}.labels"),
        annotations=_strings(raw.get("annotations"), f"{where}.annotations"),
        starts_at=starts,
        ends_at=_time(raw.get("endsAt"), f"{where}.endsAt", optional=True),
        generator_url=url if isinstance(url, str) else "",
    )


def parse_notification(body: bytes) -> AlertGroup:
    """The alert group in an Alertmanager webhook body (version 4); 400 for anything else."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected(400, f"body is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise Rejected(400, "body must be a JSON object")
    if data.get("version") != "4":
        raise Rejected(400, f"unsupported notification version {data.get('version')!r}; want '4'")
    status = data.get("status")
    if status not in (FIRING, RESOLVED):
        raise Rejected(400, "status must be 'firing' or 'resolved'")
    key = data.get("groupKey")
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_GROUP_KEY:
        raise Rejected(400, "groupKey is missing or malformed")
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list) or not raw_alerts:
        raise Rejected(400, "alerts must be a non-empty list")
    alerts = tuple(_alert(raw, i) for i, raw in enumerate(raw_alerts))
    if len({a.fingerprint for a in alerts}) != len(alerts):
        raise Rejected(400, "alerts repeat a fingerprint")
    truncated = data.get("truncatedAlerts", 0)
    receiver, url = data.get("receiver"), data.get("externalURL")
    return AlertGroup(
        status=status,
        group_key=key,
        alerts=alerts,
        receiver=receiver if isinstance(receiver, str) else "",
        group_labels=_strings(data.get("groupLabels"), "groupLabels"),
        common_labels=_strings(data.get("commonLabels"), "commonLabels"),
        common_annotations=_strings(data.get("commonAnnotations"), "commonAnnotations"),
        external_url=url if isinstance(url, str) else "",
        truncated=truncated if isinstance(truncated, int) and truncated > 0 else 0,
    )
