"""Certificate check runbook (daily): every watched endpoint's served certificate, judged.

For each endpoint of the certificate inventory: connect with TLS, read the served chain,
verify it against the inventory's CA bundle and the endpoint's hostname, and judge its expiry
on the runbook's thresholds (the blackbox exporter's CertificateExpiry alert fires on the same
numbers, ``opsflows.thresholds``): P3 under 30 days, P2 under 7 days, expired, untrusted or
unreachable; every certificate of the served chain and the bundle's issuing CA counts, and the
report names the one that expires first. The report is the ``certificate-check`` table
artifact; findings are notified through the routing by severity, with the
``renew-certificate`` runbook to run. With ``renew`` (the daily schedule's), it starts that
runbook itself for a leaf inside ``renew_within_days`` (the page threshold, 7 days) or
expired; one with more days left is reported for a person to plan. It changes nothing else.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from blocks.certificates import INVENTORY, CertificateInventory
from decisions.certificates import (
    EXPIRED,
    EXPIRING,
    RENEW,
    CertVerdict,
    auto_renewals,
    check_renew_within,
    judge_certificate,
    notices,
    to_renew,
)
from opsflows.errors import ConfigurationError
from opsflows.thresholds import THRESHOLDS
from procedures.operation import (
    ROUTING,
    load_block,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from tasks.cert_reports import publish_check
from tasks.flow_runs import start_deployment
from tasks.tls import check_bundle, observe

RENEW_DEPLOYMENT = "renew-certificate/renew-certificate"


def _start_renewals(
    watched: CertificateInventory, due: list[CertVerdict], issues: list[str]
) -> list[dict[str, str]]:
    """Start renew-certificate for each endpoint due that names an environment, once per
    served certificate (the idempotency key holds its serial: a rerun starts no second one)."""
    renewable = {e.name for e in watched.endpoints if e.environment}
    started = []
    for v in due:
        if v.endpoint not in renewable or not v.certificate:
            continue
        key = f"renew-certificate-{v.endpoint}-{v.certificate.serial}"
        run = start_deployment(RENEW_DEPLOYMENT, {"endpoint": v.endpoint}, key, ["auto-renew"])
        if run is None:  # reported; the findings are still notified
            issues.append(f"no deployment {RENEW_DEPLOYMENT} to renew {v.endpoint}")
            continue
        started.append({"endpoint": v.endpoint, **run})
    return started


@flow(name="certificate-check")
def certificate_check(
    inventory: str = INVENTORY,
    routing: str = ROUTING,
    timeout_s: float = 10.0,
    renew: bool = False,
    renew_within_days: float = THRESHOLDS.cert_page_days,
) -> dict[str, Any]:
    """Check every endpoint's served certificate: chain, hostname and days left.

    Args:
        inventory: CertificateInventory block: the endpoints and the CA bundle they must
            verify against.
        routing: NotificationRouting block; findings go out as P2 (under 7 days, expired,
            untrusted, unreachable) or P3 (under 30 days).
        timeout_s: Connect and handshake timeout per endpoint.
        renew: Start the renew-certificate deployment for each endpoint whose leaf expires
            within ``renew_within_days`` (or expired) and that names an environment, once per
            served certificate; the others are reported. On for the daily schedule; off: a
            person starts it.
        renew_within_days: How close to expiry ``renew`` acts (over 0, at most 30); 7 by
            default, the page threshold: under 30 days is a P3 to plan, under 7 a renewal now.
    """
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with operation_log("certificate check", "daily certificate check", ops_db, routes) as rec:
        if timeout_s <= 0:
            raise ConfigurationError("timeout_s must be positive")
        check_renew_within(renew_within_days)
        watched = load_block(CertificateInventory, inventory)
        if not watched.endpoints:
            raise ConfigurationError(
                f"the certificate inventory {inventory} lists no endpoints",
                hint="add the endpoints to check to the block",
            )
        check_bundle(watched.ca_bundle)
        checks = [observe(e, watched.ca_bundle, timeout_s) for e in watched.endpoints]
        now = datetime.now(UTC)
        verdicts = [judge_certificate(c, now) for c in checks]
        publish_check(verdicts, f"{now:%Y-%m-%d %H:%M} UTC")
        rec.impact = "none (read-only check)"
        rec.details["endpoints"] = [v.as_dict() for v in verdicts]
        findings = [v for v in verdicts if v.severity]
        rec.issues.extend(v.message for v in findings)
        due = auto_renewals(verdicts, renew_within_days) if renew else []
        started = _start_renewals(watched, due, rec.issues)
        rec.details["renewals"] = started
        auto = {r["endpoint"] for r in started}
        rec.follow_up.extend(f"renew-certificate endpoint={n}" for n in to_renew(verdicts))
        rec.follow_up = [f for f in rec.follow_up if f.split("=")[-1] not in auto]
        rec.follow_up += [f"watch renew-certificate run {r['name']}" for r in started]
        rec.follow_up += [
            f"renew the {v.first.label} of {v.endpoint}"
            for v in findings
            if v.first is not None and not v.leaf_first and v.verdict in (RENEW, EXPIRING, EXPIRED)
        ]
        runs = [f"renew-certificate started for {r['endpoint']}: run {r['name']}" for r in started]
        if renew and (later := sorted(set(to_renew(verdicts)) - {v.endpoint for v in due})):
            runs.append(
                f"Not renewed automatically ({renew_within_days:g} days or more left): "
                + ", ".join(later)
            )
        for notice in notices(verdicts):
            safe_notify(notice.severity, notice.subject, "\n".join([notice.body, *runs]))
        return {
            "checked": len(verdicts),
            "findings": len(findings),
            "worst": min((v.severity for v in findings if v.severity), default=None),
            "endpoints": [v.as_dict() for v in verdicts],
            "renewals": started,
        }
