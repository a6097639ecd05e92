"""Renew certificate runbook ("Quarterly: Update SSL certificates"), started by a person.

Issues a new certificate for an endpoint of the certificate inventory from the CA (the
devstack CA here; AWS Certificate Manager or a cert-manager issuer in production), installs it
as the endpoint's ``kubernetes.io/tls`` Secret in its environment's namespace, restarts the
Deployments that mount the Secret, and verifies over TLS that the endpoint serves the new
certificate (another serial, a later not_after, a chain that verifies). Holds the
environment's change slot. The CA, the inventory and the environment are checked before
anything changes; a refused Secret write leaves the old Secret and the served certificate as
they were. The private key never appears in a parameter, log, artifact or error.

Started by a ``CertificateExpiry`` incident (the alert's ``runbook: cert-expiry`` label, for the
endpoint its ``instance`` names), it reports to that incident as a triage runbook does: what
it did on the timeline, the incident mitigated once the served certificate verified, the lead
paged when the renewal failed.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from blocks.certificates import (
    AUTHORITY,
    INVENTORY,
    CertificateAuthority,
    CertificateInventory,
    TlsEndpoint,
)
from blocks.kube import KubeEnvironment
from decisions.certificates import check_renewal, check_renewal_days
from opsflows.errors import ConfigurationError, OpsError, PermanentError, VerificationFailed
from procedures.change_slot import check_slots
from procedures.operation import (
    ROUTING,
    OperationRecord,
    load_block,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from procedures.release import change_lock
from procedures.triage import TriageRun, read_run_incident
from tasks.cert_reports import publish_renewal
from tasks.certificates import check_authority, install_tls_secret, issue_certificate
from tasks.consumers import restart_consumers, wait_for_consumers
from tasks.tls import check_bundle, observe, wait_for_served

RUNBOOK = "renew-certificate"


@flow(name="renew-certificate")
def renew_certificate(
    endpoint: str,
    days: int = 90,
    authority: str = AUTHORITY,
    inventory: str = INVENTORY,
    routing: str = ROUTING,
    lock_timeout_s: float = 600,
    serve_timeout_s: float = 60,
    incident_id: int | None = None,
) -> dict[str, Any]:
    """Issue a new certificate from the CA, install it as the endpoint's TLS Secret, restart
    its consumers and verify the endpoint serves it.

    Args:
        endpoint: Name of the endpoint in the certificate inventory.
        days: Validity of the new certificate (31..398 days).
        authority: CertificateAuthority block that signs it.
        inventory: CertificateInventory block listing the endpoint (URL, environment, Secret)
            and the CA bundle its chain must verify against.
        routing: NotificationRouting block (P3 when renewed).
        lock_timeout_s: How long to wait for another change to the environment to finish.
        serve_timeout_s: How long the endpoint may take to serve the new certificate.
        incident_id: The CertificateExpiry incident this renewal answers (set by the
            incident flow): noted on its timeline, mitigated when verified.
    """
    reason = f"renew the certificate of {endpoint} ({days} days)"
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with operation_log("renew certificate", reason, ops_db, routes) as rec:
        check_renewal_days(days)
        if serve_timeout_s <= 0:
            raise ConfigurationError("serve_timeout_s must be positive")
        watched = load_block(CertificateInventory, inventory)
        target = watched.endpoint(endpoint)
        if not target.environment:
            raise ConfigurationError(
                f"endpoint {endpoint} names no environment: there is no Secret to install into",
                hint="set its environment (a KubeEnvironment block) in the inventory block",
            )
        check_bundle(watched.ca_bundle)
        env = load_block(KubeEnvironment, target.environment)
        incident = read_run_incident(incident_id, target.environment, ops_db)
        triage = TriageRun(RUNBOOK, target.environment, incident, ops_db)
        try:
            signer = load_block(CertificateAuthority, authority)
            result = _renew(
                rec, watched, target, env, signer, days, lock_timeout_s, serve_timeout_s
            )
        except OpsError as exc:
            if incident is not None:
                triage.escalate(f"{endpoint}: {exc}", "certificate not renewed")
            raise
        triage.note(rec.impact)
        triage.mitigated(f"{endpoint} serves the renewed certificate")
        return result


def _renew(
    rec: OperationRecord,
    watched: CertificateInventory,
    target: TlsEndpoint,
    env: KubeEnvironment,
    signer: CertificateAuthority,
    days: int,
    lock_timeout_s: float,
    serve_timeout_s: float,
) -> dict[str, Any]:
    """Check the CA, then under the change slot: issue, install, restart, verify served."""
    endpoint = target.name
    ca = check_authority(signer, days)
    rec.details.update(endpoint=endpoint, secret=f"{env.namespace}/{target.secret}")
    rec.details["authority"] = ca.subject
    before = observe(target, watched.ca_bundle)
    if before.certificate is not None:
        rec.details["before"] = before.certificate.as_dict()
    with change_lock(env, lock_timeout_s):
        check_slots()  # safe point: nothing changed yet
        issued = issue_certificate(signer, target.san(), days)
        secret = f"Secret {env.namespace}/{target.secret}"
        rec.changing = secret
        try:
            written = install_tls_secret(env, target.secret, issued)
        except PermanentError:
            # refused (403, 422, a conflict): the one write did not happen
            rec.impact = f"no change: the write of {secret} was refused"
            raise
        rec.details.update(secret_write=written, issued=issued.info.as_dict())
        restarted = restart_consumers(env, target.secret, issued.info.serial)
        if restarted:
            wait_for_consumers(env, target.secret, issued.info.serial, names=restarted)
        rec.details["restarted"] = restarted
        after = wait_for_served(
            target, watched.ca_bundle, issued.info.fingerprint, timeout_s=serve_timeout_s
        )
    publish_renewal(endpoint, before, after)
    problems = check_renewal(before.certificate, after, issued.info, datetime.now(UTC))
    if problems:
        rec.follow_up.append("look at the endpoint and its Secret; run the check again")
        raise VerificationFailed("; ".join(problems))
    old = before.certificate.serial if before.certificate else "none"
    rec.impact = (
        f"{endpoint}: serial {old} -> {issued.info.serial}, valid until "
        f"{issued.info.not_after:%Y-%m-%d} (Secret {env.namespace}/{target.secret} {written})"
    )
    safe_notify("P3", f"certificate of {endpoint} renewed", rec.impact)
    return {
        "endpoint": endpoint,
        "secret": f"{env.namespace}/{target.secret}",
        "secret_write": written,
        "restarted": restarted,
        "before": before.certificate.as_dict() if before.certificate else None,
        "after": issued.info.as_dict(),
    }
