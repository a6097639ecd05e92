"""An incident and the paging delays the incident rules' unit tests start from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from decisions.incidents import Delays, Incident
from tests.alertmanager_support import alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DELAYS = Delays(p2_page_after_s=900, secondary_after_s=300, lead_after_s=600)


def incident(**changes: Any) -> Incident:
    base: dict[str, Any] = {
        "id": 7,
        "group_key": "{}:{alertname=ServiceDown}",
        "source": "alertmanager",
        "title": "ServiceDown: no answers",
        "severity": "P1",
        "status": "resolved",
        "triggered_at": T0,
        "runbook": "service-down",
        "environment": "production",
        "alerts": (alert(fingerprint="a1"),),
        "acknowledged_at": T0 + timedelta(seconds=400),
        "acknowledged_by": "alice",
        "resolved_at": T0 + timedelta(seconds=900),
        "resolved_by": "alertmanager",
        "pages": 2,
    }
    return Incident(**{**base, **changes})
