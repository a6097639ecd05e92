"""Which triage runbook deployment an alert's ``runbook`` label starts, with what (pure).

The incident flow (``procedures/incident.py:start_triage``) starts :data:`TRIAGE`'s
deployment for the incident's ``runbook`` label once per opening, with the parameters
:func:`triage_parameters` names. ``cert-expiry`` (the blackbox exporter's CertificateExpiry)
starts ``renew-certificate`` once per certificate-inventory endpoint the firing alerts'
``instance`` labels name (:func:`alert_endpoints`), for a P1/P2 incident only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from decisions.alert_labels import CERT_EXPIRY, RUNBOOKS
from decisions.alertmanager import FIRING, SEVERITIES
from decisions.certificates import endpoint_for_instance
from decisions.incidents import Incident


@dataclass(frozen=True)
class Triage:
    """The deployment that triages one kind of incident, and the parameters it gets.

    A triage with an ``endpoint`` parameter is started once per certificate-inventory
    endpoint the incident's firing alerts name by their ``instance`` label
    (:func:`alert_endpoints`); none named: no run, and the timeline says why. One with
    ``severities`` starts only for an incident of one of them; another gets ``otherwise``
    on its timeline.
    """

    deployment: str
    parameters: tuple[str, ...] = ("incident_id", "environment")
    severities: tuple[str, ...] = SEVERITIES
    otherwise: str = ""

    @property
    def per_endpoint(self) -> bool:
        return ENDPOINT in self.parameters

    def refusal(self, incident: Incident) -> str | None:
        """Why it does not start for ``incident`` (its severity), or None: it starts."""
        if incident.severity in self.severities:
            return None
        return (
            f"no automated triage for {incident.runbook} at {incident.severity}: "
            f"{self.deployment} starts for {'/'.join(self.severities)} only; {self.otherwise}"
        )


ENDPOINT = "endpoint"

#: The alert rules' ``runbook`` label (``decisions.alert_labels.RUNBOOKS``) → its triage
#: deployment, ``<runbook>/<runbook>`` unless a row here says otherwise. A deployment that does
#: not exist yet means "no automated triage": the flow says so in the timeline and pages.
TRIAGE: dict[str, Triage] = {
    **{runbook: Triage(f"{runbook}/{runbook}") for runbook in RUNBOOKS},
    # CertificateExpiry: renew the certificate of the probed endpoint (the alert's instance),
    # inside the page threshold only (its P2 rule), as the daily certificate check does.
    CERT_EXPIRY: Triage(
        "renew-certificate/renew-certificate",
        (ENDPOINT, "incident_id"),
        severities=("P1", "P2"),
        otherwise="a renewal with more than 7 days left is a person's to plan (renew-certificate "
        "by hand); the daily certificate-check renews it once under 7 days",
    ),
}


def triage_for(runbook: str | None) -> Triage | None:
    return TRIAGE.get(runbook or "")


def triage_parameters(
    triage: Triage, incident: Incident, endpoint: str | None = None
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "incident_id": incident.id,
        "environment": incident.environment,
        ENDPOINT: endpoint,
    }
    return {name: values[name] for name in triage.parameters if values.get(name) is not None}


def alert_endpoints(
    incident: Incident, endpoints: Sequence[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """The endpoints (of ``(name, url)`` pairs) the firing alerts' ``instance`` labels name,
    and the instances that name none (both in the alerts' order, without repeats)."""
    instances = [
        str((a.get("labels") or {}).get("instance") or "")
        for a in incident.alerts
        if a.get("status") == FIRING
    ]
    matched: dict[str, None] = {}
    unmatched: dict[str, None] = {}
    for instance in instances:
        name = endpoint_for_instance(instance, endpoints) if instance else None
        if name is None:
            unmatched[instance or "(no instance label)"] = None
        else:
            matched[name] = None
    return list(matched), list(unmatched)
