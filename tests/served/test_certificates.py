"""The certificate runbooks started as people start them: the daily check and the renewal.

The stack's TLS endpoint serves a certificate of the stack CA; ``tlsendpoint.issue`` swaps in
one that expires in 5 days (as the alert test does), the check pages P2 at the sink, the
renewal installs a new certificate as the production TLS Secret (which the endpoint serves),
and the check is clean again. The failure cases change nothing: a missing CA is refused before
the change slot, a refused Secret write leaves the Secret and the served certificate as they
were, an endpoint that is down is reported.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
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
from tests.incident_support import sink
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

    # a certificate of the stack CA that expires in 5 days: P2, paged
    tlsendpoint.issue(folder, stack.host, days=5)
    expiring = served(stack).certificate
    run, row = run_check(runpath)
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
    stack, api = runpath.stack, runpath.api
    tlsendpoint.issue(stack.tls_cert_file.parent, stack.host, days=20)
    expiring = served(stack).certificate
    notes = len(notices(stack, "notify"))
    _, row = run_check(runpath, renew=True)
    (renewal,) = row["details"]["renewals"]
    assert renewal["endpoint"] == "devstack"
    assert row["follow_up"] == f"watch renew-certificate run {renewal['name']}"
    (note,) = notices(stack, "notify")[notes:]
    assert note["subject"].startswith("[P3] certificates: 1 finding(s): devstack")
    assert f"renew-certificate started for devstack: run {renewal['name']}" in note["body"]
    run = api.wait(renewal["flow_run_id"], timeout=180)
    assert_completed(run, runpath.log)
    assert run["parameters"] == {**run["parameters"], "endpoint": "devstack"}
    now = served(stack).certificate
    assert now.serial != expiring.serial and now.not_after > expiring.not_after
    _, row = run_check(runpath, renew=True)
    assert row["details"]["renewals"] == [] and row["issues"] == ""
