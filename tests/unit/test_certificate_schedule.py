"""The daily certificate check as its schedule runs it (no services).

The schedule runs with the deployment's parameters over the flow's defaults: it renews by
itself (``renew``) only a leaf inside the page threshold (``renew_within_days``, 7 days, the
CertificateExpiry P2 rule's number) or expired; under 30 days is a P3 a person plans.
"""

from __future__ import annotations

import inspect

from opsflows.thresholds import THRESHOLDS


def test_the_daily_check_renews_only_inside_the_page_threshold() -> None:
    from deployments.catalog import runner_deployments
    from flows.certificate_check import certificate_check

    (daily,) = [d for d in runner_deployments() if d.name == "certificate-check"]
    assert [s.schedule.cron for s in daily.schedules] == ["0 5 * * *"]
    assert daily.parameters == {"renew": True}  # renew_within_days: the flow's default
    defaults = inspect.signature(certificate_check.fn).parameters
    assert defaults["renew_within_days"].default == THRESHOLDS.cert_page_days == 7
    assert defaults["renew"].default is False  # by hand: a report unless asked
    assert "read-only" not in (daily.tags or [])  # it may start a change
