"""The certificate runbooks started as people start them: the daily check and the renewal.

The stack's TLS endpoint serves a certificate of the stack CA; ``tlsendpoint.issue`` swaps in
one that expires in 5 days (as the alert test does), the check pages P2 at the sink, the
renewal installs a new certificate as the production TLS Secret (which the endpoint serves),
and the check is clean again. The failure cases change nothing: a missing CA is refused before
the change slot, a refused Secret write leaves the Secret and the served certificate as they
were, an endpoint that is down is reported. The check as scheduled (``renew``) renews only
inside the page threshold; a CertificateExpiry alert's incident renews the endpoint its
``instance`` names.

The real CertificateExpiry alert is silenced during each case: its incident would start
renew-certificate too (the ``cert-expiry`` runbook) and race the case's own renewal.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from blocks.certificates import (
    AUTHORITY,
    INVENTORY,
    CertificateAuthority,
    CertificateInventory,
    TlsEndpoint,
)
from devstack import procs, tlsendpoint
from devstack.stack import StackInfo
from opsflows.settings import Settings
from tasks import pki, tls
from tests.alertmanager_support import alert, notification, resolved
from tests.incident_support import active_alerts, incident, post_alerts, sink, timeline, wait_for
from tests.served_support import SERVE_ONLY, RunPath, assert_completed, load_block
from tests.support import oplog_row

CHECK = "certificate-check/certificate-check"
RENEW = "renew-certificate/renew-certificate"
SUBJECT = "certificates:"


def secret_url(stack: StackInfo) -> str:
    settings = Settings()
    ns, name = settings.kube_namespace_production, settings.tls_secret_name
    return f"{stack.kube_url}/api/v1/namespaces/{ns}/secrets/{name}"


def read_secret(stack: StackInfo) -> dict[str, Any] | None:
    response = httpx.get(secret_url(stack), timeout=10)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return dict(response.json())


def served(stack: StackInfo) -> Any:
    """What the stack's endpoint serves now, verified against the stack CA."""
    endpoint = TlsEndpoint(name="devstack", url=stack.tls_url)
    return tls.inspect(endpoint, str(stack.ca_cert_file))


def notices(stack: StackInfo, channel: str) -> list[dict[str, Any]]:
    """The certificate check's notifications in ``channel`` (subject ``[Px] certificates:``),
    as the webhook block posted them (``{"subject": ..., "body": ...}``)."""
    posted = [m.get("body") for m in sink(stack, channel)]
    return [p for p in posted if isinstance(p, dict) and SUBJECT in str(p.get("subject"))]


@pytest.fixture(autouse=True)
def expiry_alert_silenced(runpath: RunPath) -> Iterator[None]:
    """CertificateExpiry silenced in Alertmanager for the case; afterwards a certificate with
    its full validity served again and the alert quiet before the silence goes."""
    stack = runpath.stack
    now = datetime.now(UTC)
    body = {
        "matchers": [
            {"name": "alertname", "value": "CertificateExpiry", "isRegex": False, "isEqual": True}
        ],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=15)).isoformat(),
        "createdBy": "opsflows served certificate tests",
        "comment": "the case renews the certificate itself",
    }
    resp = httpx.post(f"{stack.alertmanager_url}/api/v2/silences", json=body, timeout=10)
    resp.raise_for_status()
    try:
        yield
    finally:
        left = served(stack).certificate.not_after - datetime.now(UTC)
        if left < timedelta(days=31):
            tlsendpoint.issue(stack.tls_cert_file.parent, stack.host, Settings().tls_cert_days)
        wait_for(
            lambda: not active_alerts(stack, "CertificateExpiry", "production"),
            90,
            "CertificateExpiry still active after the case",
        )
        silence = resp.json()["silenceID"]
        httpx.delete(f"{stack.alertmanager_url}/api/v2/silence/{silence}", timeout=10)


def run_check(runpath: RunPath, **params: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    run = runpath.api.finish(CHECK, timeout=120, **params)
    assert_completed(run, runpath.log)
    return run, oplog_row(runpath.stack, run["id"])


def test_a_certificate_expiring_in_5_days_pages_and_renewal_clears_it(runpath: RunPath) -> None:
    stack, api = runpath.stack, runpath.api
    folder = stack.tls_cert_file.parent

    # a clean stack: nothing reported
    tlsendpoint.issue(folder, stack.host, days=Settings().tls_cert_days)
    pages, notes = len(notices(stack, "page")), len(notices(stack, "notify"))
    _, row = run_check(runpath)
    assert row["status"] == "succeeded" and row["issues"] == "", row["issues"]
    assert [e["verdict"] for e in row["details"]["endpoints"]] == ["ok"]
    assert (len(notices(stack, "page")), len(notices(stack, "notify"))) == (pages, notes)

    # a certificate of the stack CA that expires in 5 days: P2, paged (reported only: a
    # person runs the check by hand without renew)
    tlsendpoint.issue(folder, stack.host, days=5)
    expiring = served(stack).certificate
    run, row = run_check(runpath, renew=False)
    (found,) = row["details"]["endpoints"]
    assert (found["verdict"], found["severity"]) == ("expiring", "P2")
    assert found["serial"] == expiring.serial and 4.9 < found["days_left"] <= 5
    assert found["threshold_days"] == 7.0
    (page,) = notices(stack, "page")[pages:]
    assert page["subject"].startswith("[P2] certificates: 1 finding(s): devstack")
    assert "expires in 5.0 days" in page["body"] or "expires in 4.9 days" in page["body"]
    assert "renew-certificate" in page["body"] and "endpoint=devstack" in page["body"]
    table = api.latest_artifact("certificate-check")
    assert "expiring (P2)" in table and "CN=opsflows devstack CA" in table
    assert row["follow_up"] == "renew-certificate endpoint=devstack"
    assert row["details"]["renewals"] == []
    assert found["expires_first"] == f"leaf {expiring.subject}"

    # the renewal, through the served path
    run = api.finish(RENEW, timeout=180, endpoint="devstack")
    assert_completed(run, runpath.log)
    row = oplog_row(stack, run["id"])
    now = served(stack)
    assert now.chain is not None and now.chain.ok
    assert now.certificate.serial != expiring.serial
    assert now.certificate.not_after > expiring.not_after
    assert row["details"]["issued"]["serial"] == now.certificate.serial
    assert row["impact"].startswith(
        f"devstack: serial {expiring.serial} -> {now.certificate.serial}"
    )
    secret = read_secret(stack)
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    crt = base64.b64decode(secret["data"]["tls.crt"]).decode()
    assert now.certificate.serial == pki.describe(pki.load_cert(crt.encode())).serial
    # the key is in the Secret only: not in the run's parameters, result row, artifacts or logs
    key_body = base64.b64decode(secret["data"]["tls.key"]).decode().splitlines()[1]
    renewal = api.latest_artifact("certificate-renewal")
    assert now.certificate.serial in renewal
    for text in (str(run["parameters"]), str(row), renewal, runpath.log.read_text()):
        assert key_body not in text and "PRIVATE KEY" not in text

    # clean again
    pages = len(notices(stack, "page"))
    _, row = run_check(runpath)
    assert [e["verdict"] for e in row["details"]["endpoints"]] == ["ok"]
    assert len(notices(stack, "page")) == pages


@pytest.fixture
def faults(runpath: RunPath) -> Iterator[str]:
    url = f"{runpath.stack.kube_url}/_sim/faults"
    httpx.delete(url, timeout=5)
    yield url
    httpx.delete(url, timeout=5)


@SERVE_ONLY
def test_a_refused_secret_write_leaves_the_old_certificate_served(
    runpath: RunPath, faults: str
) -> None:
    stack = runpath.stack
    before, secret = served(stack).certificate, read_secret(stack)
    for method in ("PUT", "POST", "PATCH"):
        rule = {"status": 403, "method": method, "path": ".*/secrets.*", "count": None}
        httpx.post(faults, json=rule, timeout=5).raise_for_status()
    run = runpath.api.finish(RENEW, timeout=180, endpoint="devstack")
    assert run["state"]["type"] == "FAILED", run["state"]
    assert "write secret" in run["state"]["message"] and "403" in run["state"]["message"]
    httpx.delete(faults, timeout=5)
    assert read_secret(stack) == secret  # not a field changed, not even the resourceVersion
    after = served(stack).certificate
    assert after.fingerprint == before.fingerprint
    row = oplog_row(stack, run["id"])
    assert row["status"] == "failed"
    assert row["impact"] == "no change: the write of Secret production/web-app-tls was refused"
    assert "write secret" in row["issues"]
    limit = runpath.api.http.get("/v2/concurrency_limits/change-production").json()
    assert limit["active_slots"] == 0  # the slot was given back


@SERVE_ONLY
def test_a_missing_ca_is_refused_before_any_change(runpath: RunPath, tmp_path: Path) -> None:
    stack = runpath.stack
    CertificateAuthority(
        cert_file=str(tmp_path / "gone" / "ca.pem"), key_file=str(tmp_path / "gone" / "ca-key.pem")
    ).save("missing-ca", overwrite=True)
    before, secret = served(stack).certificate, read_secret(stack)
    run = runpath.api.finish(RENEW, timeout=120, endpoint="devstack", authority="missing-ca")
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert f"the CA certificate {tmp_path / 'gone' / 'ca.pem'} does not exist" in message
    assert "devstack up" in message
    assert read_secret(stack) == secret
    assert served(stack).certificate.fingerprint == before.fingerprint
    row = oplog_row(stack, run["id"])
    assert row["status"] == "failed" and "secret_write" not in row["details"]
    assert row["impact"] == "no change"
    assert load_block(CertificateAuthority, AUTHORITY).cert_file == str(stack.ca_cert_file)


@SERVE_ONLY
def test_an_endpoint_that_is_down_is_reported(runpath: RunPath) -> None:
    stack = runpath.stack
    watched = load_block(CertificateInventory, INVENTORY)
    down = TlsEndpoint(name="down", url=f"https://{stack.host}:{procs.free_port(stack.host)}")
    CertificateInventory(endpoints=[*watched.endpoints, down], ca_bundle=watched.ca_bundle).save(
        "with-down", overwrite=True
    )
    pages = len(notices(stack, "page"))
    _, row = run_check(runpath, inventory="with-down")
    verdicts = {e["endpoint"]: (e["verdict"], e["severity"]) for e in row["details"]["endpoints"]}
    assert verdicts == {"devstack": ("ok", None), "down": ("unreachable", "P2")}
    (page,) = notices(stack, "page")[pages:]
    assert "down" in page["subject"] and "unreachable" in page["body"]
    assert "endpoint=down" not in page["body"]  # renewing cannot fix it
    table = runpath.api.latest_artifact("certificate-check")
    assert "unreachable (P2)" in table


@SERVE_ONLY
def test_the_check_can_start_the_renewal_itself(runpath: RunPath) -> None:
    """As scheduled (the deployment's renew=true): 20 days left is a P3 reported for a
    person to plan, nothing started; 5 days left (the page threshold is 7) starts
    renew-certificate, once per served certificate."""
    stack, api = runpath.stack, runpath.api
    folder = stack.tls_cert_file.parent
    tlsendpoint.issue(folder, stack.host, days=20)
    notes = len(notices(stack, "notify"))
    _, row = run_check(runpath)
    assert row["details"]["renewals"] == []
    assert row["follow_up"] == "renew-certificate endpoint=devstack"
    (note,) = notices(stack, "notify")[notes:]
    assert note["subject"].startswith("[P3] certificates: 1 finding(s): devstack")
    assert "Not renewed automatically (7 days or more left): devstack" in note["body"]

    tlsendpoint.issue(folder, stack.host, days=5)
    expiring = served(stack).certificate
    pages = len(notices(stack, "page"))
    _, row = run_check(runpath)
    (renewal,) = row["details"]["renewals"]
    assert renewal["endpoint"] == "devstack"
    assert row["follow_up"] == f"watch renew-certificate run {renewal['name']}"
    (page,) = notices(stack, "page")[pages:]
    assert page["subject"].startswith("[P2] certificates: 1 finding(s): devstack")
    assert f"renew-certificate started for devstack: run {renewal['name']}" in page["body"]
    run = api.wait(renewal["flow_run_id"], timeout=180)
    assert_completed(run, runpath.log)
    assert run["parameters"] == {**run["parameters"], "endpoint": "devstack"}
    now = served(stack).certificate
    assert now.serial != expiring.serial and now.not_after > expiring.not_after
    _, row = run_check(runpath)
    assert row["details"]["renewals"] == [] and row["issues"] == ""


@SERVE_ONLY
def test_a_certificate_expiry_alert_renews_the_endpoint_its_instance_names(
    runpath: RunPath, webhook: str
) -> None:
    """Alertmanager's CertificateExpiry group (runbook cert-expiry) opens an incident whose
    run starts renew-certificate for the inventory endpoint the alert's instance names; an
    instance no endpoint has is refused on the timeline; the renewal marks it mitigated."""
    stack, api = runpath.stack, runpath.api
    tlsendpoint.issue(stack.tls_cert_file.parent, stack.host, days=5)
    expiring = served(stack).certificate
    stranger = "https://203.0.113.9:8443"
    fired = [
        alert("CertificateExpiry", "P2", runbook="cert-expiry", instance=inst)
        for inst in (stack.tls_url, stranger)
    ]
    payload = notification(fired)
    answer = post_alerts(stack, payload)
    assert answer.status_code == 202 and answer.json()["status"] == "opened", answer.text
    incident_id, incident_run = answer.json()["incident_id"], answer.json()["flow_run_id"]
    try:
        runs = wait_for(
            lambda: incident(stack, incident_id).runbook_runs, 90, "no runbook run started"
        )
        (started,) = runs
        assert started["runbook"] == "cert-expiry"
        run = api.wait(started["flow_run_id"], timeout=180)
        assert_completed(run, runpath.log)
        assert run["parameters"] == {
            **run["parameters"],
            "endpoint": "devstack",
            "incident_id": incident_id,
        }
        now = served(stack).certificate
        assert now.serial != expiring.serial and now.not_after > expiring.not_after
        mitigated = wait_for(
            lambda: incident(stack, incident_id).status == "mitigated", 30, "not mitigated"
        )
        assert mitigated
        events = timeline(stack, incident_id)
        (triage,) = [e.text for e in events if e.kind == "triage"]
        assert "started renew-certificate/renew-certificate for devstack: flow run" in triage
        assert f"no automated triage for cert-expiry of {stranger}: no endpoint" in triage
        assert any(
            e.kind == "runbook" and f"serial {expiring.serial} -> {now.serial}" in e.text
            for e in events
        )
    finally:
        closing = post_alerts(stack, resolved(payload))
        assert closing.status_code == 200, closing.text
    assert_completed(api.wait(incident_run, timeout=120), runpath.log)
