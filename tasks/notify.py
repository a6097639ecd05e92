"""Send notifications through Prefect notification blocks (Slack, PagerDuty, webhooks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from prefect import task
from prefect.blocks.abstract import NotificationBlock
from prefect.logging import get_run_logger

from opsflows import retry
from opsflows.errors import scrub


@task(name="notify", **retry.NETWORK)
def send_notification(
    targets: Sequence[NotificationBlock], severity: str, subject: str, body: str
) -> int:
    """Send ``subject``/``body`` to every target; the number that accepted it.

    A failing channel is logged and skipped: one broken webhook must not stop the page
    reaching the others.
    """
    logger = get_run_logger()
    delivered = 0
    for target in targets:
        try:
            cast(Any, target).notify(body=body, subject=f"[{severity}] {subject}")
            delivered += 1
        except Exception as exc:  # noqa: BLE001 - any channel failure is reported, not fatal
            logger.warning("notification via %s failed: %s", type(target).__name__, scrub(str(exc)))
    logger.info(
        "%s notification %r delivered to %d/%d channels", severity, subject, delivered, len(targets)
    )
    return delivered
