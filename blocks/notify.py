"""Who hears about what: severity → Prefect notification blocks (Slack, PagerDuty, webhooks)."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from opsflows.errors import ConfigurationError

SEVERITIES = ("P1", "P2", "P3", "P4")


class NotificationRouting(Block):
    """Routes a notification by severity to saved Prefect notification blocks.

    Each route lists block documents as ``"<block-type-slug>/<name>"`` (for example
    ``"slack-webhook/incidents"`` or ``"pager-duty-webhook/on-call"``), so the team reuses
    Prefect's own Slack, PagerDuty and webhook blocks. The runbook's channels are the
    defaults: P1/P2 page and notify, P3 notifies, P4 only logs.

    ``channels`` names the other places incidents reach: ``incidents`` (the runbook's
    "#incidents" Slack channel) and the escalation levels after the on-call, ``secondary``
    and ``lead`` (an escalation level with no channel pages the severity's route again).
    """

    _block_type_name: ClassVar[str] = "Opsflows Notification Routing"
    _block_type_slug: ClassVar[str] = "opsflows-notification-routing"
    _description: ClassVar[str | None] = "Severity-based routing to notification blocks."
    _documentation_url: ClassVar[Any] = (
        "https://docs.prefect.io/v3/automate/events/automations-triggers"
    )

    routes: dict[str, list[str]] = Field(
        default_factory=lambda: {severity: list[str]() for severity in SEVERITIES},
        description="Severity (P1..P4) → notification block documents (slug/name).",
    )

    channels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Named channels (incidents, secondary, lead) → notification block documents.",
    )

    def targets(self, severity: str) -> list[str]:
        """The block documents for ``severity`` (an unknown severity is an error)."""
        if severity not in SEVERITIES:
            raise ConfigurationError(
                f"unknown severity {severity!r}; use one of {', '.join(SEVERITIES)}"
            )
        return list(self.routes.get(severity, []))

    def channel(self, name: str) -> list[str]:
        """The block documents of a named channel (none configured: empty)."""
        return list(self.channels.get(name, []))
