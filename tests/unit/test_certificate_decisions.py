"""Certificate verdicts, chain classification, notices and renewal checks: pure, no services."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from decisions.certificates import (
    EXPIRED,
    EXPIRING,
    HOSTNAME_MISMATCH,
    INTERMEDIATE,
    ISSUING_CA,
    LEAF,
    OK,
    RENEW,
    ROOT,
    UNREACHABLE,
    UNTRUSTED,
    VERIFY_FAILED,
    CertInfo,
    EndpointCheck,
    auto_renewals,
    chain_check,
    chain_members,
    check_renew_within,
    check_renewal,
    check_renewal_days,
    days_left,
    endpoint_for_instance,
    expires_first,
    judge_certificate,
    notices,
    to_renew,
)
from opsflows.errors import ConfigurationError
from opsflows.thresholds import THRESHOLDS, Thresholds
from tasks import pki

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def cert(days: float, serial: str = "0a", fingerprint: str = "f1") -> CertInfo:
    return CertInfo(
        subject="CN=127.0.0.1",
        issuer="CN=opsflows devstack CA",
        serial=serial,
        fingerprint=fingerprint,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=days),
        names=("127.0.0.1", "localhost"),
    )


def served(days: float, code: int | None = None, message: str = "", **kw: str) -> EndpointCheck:
    return EndpointCheck(
        "devstack",
        "https://127.0.0.1:18443",
        certificate=cert(days, **kw),
        chain=chain_check(code, message),
        chain_length=1,
    )


def test_days_left_is_negative_once_expired() -> None:
    assert days_left(NOW + timedelta(hours=36), NOW) == 1.5
    assert days_left(NOW - timedelta(days=2), NOW) == -2.0


@pytest.mark.parametrize(
    ("days", "verdict", "severity", "threshold"),
    [
        (90, OK, None, 30.0),
        (30.01, OK, None, 30.0),
        (29.99, RENEW, "P3", 30.0),
        (7.01, RENEW, "P3", 30.0),
        (6.99, EXPIRING, "P2", 7.0),
        (5, EXPIRING, "P2", 7.0),
        (0.01, EXPIRING, "P2", 7.0),
    ],
)
def test_days_left_verdicts_share_the_alert_thresholds(
    days: float, verdict: str, severity: str | None, threshold: float
) -> None:
    v = judge_certificate(served(days), NOW)
    assert (v.verdict, v.severity, v.threshold_days) == (verdict, severity, threshold)
    assert v.days_left == pytest.approx(days)
    # the thresholds are THRESHOLDS', the ones the CertificateExpiry rule renders
    assert (THRESHOLDS.cert_notify_days, THRESHOLDS.cert_page_days) == (30.0, 7.0)


def test_thresholds_are_taken_from_the_argument() -> None:
    strict = Thresholds(cert_notify_days=60, cert_page_days=45)
    assert judge_certificate(served(50), NOW, strict).verdict == RENEW
    assert judge_certificate(served(40), NOW, strict).verdict == EXPIRING


def test_an_expired_certificate_pages_whatever_openssl_said_first() -> None:
    v = judge_certificate(served(-2, code=10, message="certificate has expired"), NOW)
    assert (v.verdict, v.severity) == (EXPIRED, "P2")
    assert "expired 2.0 days ago" in v.message
    assert v.row()["chain_ok"] == "no: certificate has expired"


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        (None, "", OK),
        (10, "certificate has expired", EXPIRED),
        (62, "Hostname mismatch, certificate is not valid for 'example.org'.", HOSTNAME_MISMATCH),
        (64, "IP address mismatch, certificate is not valid for '10.0.0.1'.", HOSTNAME_MISMATCH),
        (18, "self-signed certificate", UNTRUSTED),
        (20, "unable to get local issuer certificate", UNTRUSTED),
        (19, "self-signed certificate in certificate chain", UNTRUSTED),
        (7, "certificate signature failure", VERIFY_FAILED),
    ],
)
def test_chain_check_classifies_openssl_verify_results(
    code: int | None, message: str, kind: str
) -> None:
    check = chain_check(code, message)
    assert check.kind == kind
    assert check.ok is (kind == OK)
    assert check.cell() == ("yes" if kind == OK else f"no: {message}")


@pytest.mark.parametrize(
    ("code", "message", "verdict"),
    [
        (20, "unable to get local issuer certificate", UNTRUSTED),
        (62, "Hostname mismatch", HOSTNAME_MISMATCH),
    ],
)
def test_a_chain_clients_refuse_pages_even_with_time_left(
    code: int, message: str, verdict: str
) -> None:
    v = judge_certificate(served(80, code=code, message=message), NOW)
    assert (v.verdict, v.severity) == (verdict, "P2")
    assert message in v.message
    assert v.days_left == pytest.approx(80)


def test_an_endpoint_that_serves_nothing_is_unreachable_p2() -> None:
    check = EndpointCheck("down", "https://127.0.0.1:1", error="connection refused")
    v = judge_certificate(check, NOW)
    assert (v.verdict, v.severity) == (UNREACHABLE, "P2")
    assert "connection refused" in v.message
    assert v.row()["days_left"] == "" and v.row()["subject"] == ""


def test_the_table_row_has_the_report_columns() -> None:
    row = judge_certificate(served(5), NOW).row()
    assert list(row) == [
        "endpoint",
        "subject",
        "issuer",
        "expires_first",
        "not_after",
        "days_left",
        "chain_ok",
        "verdict",
    ]
    assert row["verdict"] == "expiring (P2)" and row["chain_ok"] == "yes"
    assert row["days_left"] == "5.0"
    assert row["issuer"] == "CN=opsflows devstack CA"
    assert row["expires_first"] == "leaf CN=127.0.0.1"


def test_notices_one_per_severity_and_none_when_clean() -> None:
    clean = [judge_certificate(served(90), NOW)]
    assert notices(clean) == []
    mixed = [
        judge_certificate(served(5), NOW),
        replace(judge_certificate(served(20), NOW), endpoint="api"),
        judge_certificate(EndpointCheck("down", "https://x:1", error="refused"), NOW),
    ]
    found = notices(mixed)
    assert [n.severity for n in found] == ["P2", "P3"]
    assert found[0].subject == "certificates: 2 finding(s): devstack, down"
    assert "renew-certificate" in found[0].body and "endpoint=devstack" in found[0].body
    assert "endpoint=down" not in found[0].body  # renewing cannot fix an unreachable endpoint
    assert "endpoint=api" in found[1].body


@pytest.mark.parametrize("days", [0, 7, 30, 399])
def test_renewal_days_outside_the_window_are_refused(days: int) -> None:
    with pytest.raises(ConfigurationError):
        check_renewal_days(days)


def test_renewal_days_inside_the_window_pass() -> None:
    check_renewal_days(31)
    check_renewal_days(90)


def test_a_renewal_is_checked_on_what_the_endpoint_serves() -> None:
    old = cert(5, serial="01", fingerprint="aa")
    new = cert(90, serial="02", fingerprint="bb")
    ok = EndpointCheck("e", "https://h:1", certificate=new, chain=chain_check(None))
    assert check_renewal(old, ok, new, NOW) == []
    assert check_renewal(None, ok, new, NOW) == []

    still_old = EndpointCheck("e", "https://h:1", certificate=old, chain=chain_check(None))
    problems = check_renewal(old, still_old, new, NOW)
    assert any("not the issued 02" in p for p in problems)
    assert any("old serial 01" in p for p in problems)
    assert any("not later" in p for p in problems)

    untrusted = replace(ok, chain=chain_check(20, "unable to get local issuer certificate"))
    assert check_renewal(old, untrusted, new, NOW) == [
        "https://h:1: the served chain does not verify: unable to get local issuer certificate"
    ]
    gone = EndpointCheck("e", "https://h:1", error="connection refused")
    assert check_renewal(old, gone, new, NOW) == [
        "https://h:1 served no certificate after the renewal: connection refused"
    ]


def test_only_expiring_or_expired_certificates_are_renewed() -> None:
    verdicts = [
        replace(judge_certificate(served(90), NOW), endpoint="fine"),
        replace(judge_certificate(served(20), NOW), endpoint="soon"),
        replace(judge_certificate(served(5), NOW), endpoint="urgent"),
        replace(judge_certificate(served(-1, 10, "certificate has expired"), NOW), endpoint="gone"),
        replace(judge_certificate(served(80, 20, "untrusted"), NOW), endpoint="untrusted"),
        judge_certificate(EndpointCheck("down", "https://x:1", error="refused"), NOW),
    ]
    assert to_renew(verdicts) == ["soon", "urgent", "gone"]


@pytest.mark.parametrize(
    ("days", "due"),
    [(90, False), (20, False), (7.01, False), (6.99, True), (0.5, True), (-1, True)],
)
def test_the_check_renews_on_its_own_only_inside_the_page_threshold(days: float, due: bool) -> None:
    code = 10 if days <= 0 else None
    v = judge_certificate(served(days, code, "certificate has expired" if code else ""), NOW)
    assert auto_renewals([v], THRESHOLDS.cert_page_days) == ([v] if due else [])
    # asked for the warning threshold, it renews everything it reports
    assert auto_renewals([v], THRESHOLDS.cert_notify_days) == ([v] if days < 30 else [])


def test_the_check_never_renews_what_a_renewal_cannot_fix() -> None:
    untrusted = judge_certificate(served(3, 20, "unable to get local issuer certificate"), NOW)
    down = judge_certificate(EndpointCheck("down", "https://x:1", error="refused"), NOW)
    assert auto_renewals([untrusted, down], 7) == []


@pytest.mark.parametrize("days", [0, -1, 30.5, 90])
def test_renew_within_days_outside_the_reported_window_is_refused(days: float) -> None:
    with pytest.raises(ConfigurationError, match="renew_within_days") as raised:
        check_renew_within(days)
    assert raised.value.hint and "7" in raised.value.hint


def test_renew_within_days_inside_the_reported_window_passes() -> None:
    for days in (0.5, 7, 30):
        check_renew_within(days)


@pytest.mark.parametrize(
    ("instance", "endpoint"),
    [
        ("https://127.0.0.1:18443", "devstack"),
        ("https://127.0.0.1:18443/", "devstack"),
        ("127.0.0.1:18443", "devstack"),
        ("https://WWW.Example.org", "www"),
        ("www.example.org:443", "www"),
        ("https://127.0.0.1:18444", None),
        ("https://www.example.org:8443", None),
        ("", None),
        ("https://[::1", None),
    ],
)
def test_a_probe_instance_names_the_endpoint_with_its_host_and_port(
    instance: str, endpoint: str | None
) -> None:
    known = [("devstack", "https://127.0.0.1:18443"), ("www", "https://www.example.org")]
    assert endpoint_for_instance(instance, known) == endpoint


# --- the whole chain: certificates made with `cryptography`, as tasks/pki.py makes them --------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    days: float,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = True,
) -> tuple[CertInfo, str, ec.EllipticCurvePrivateKey]:
    """A certificate valid until NOW + ``days``, signed by ``issuer`` (self-signed: None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signer = issuer if issuer else (subject, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=400))
        .not_valid_after(NOW + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return pki.describe(cert), subject, key


def chain(leaf: float, intermediate: float, root: float, send_root: bool = False) -> EndpointCheck:
    """leaf <- intermediate <- root: the server sends the leaf and the intermediate (and the
    root when ``send_root``); the root is the bundle's CA otherwise."""
    root_info, root_cn, root_key = _cert("root CA", root)
    mid_info, mid_cn, mid_key = _cert("intermediate CA", intermediate, (root_cn, root_key))
    leaf_info, _, _ = _cert("app.example.org", leaf, (mid_cn, mid_key), ca=False)
    sent = (mid_info, root_info) if send_root else (mid_info,)
    return EndpointCheck(
        "app",
        "https://app.example.org",
        certificate=leaf_info,
        chain=chain_check(None),
        chain_length=1 + len(sent),
        served_chain=sent,
        issuer_ca=None if send_root else root_info,
    )


def test_chain_members_are_the_leaf_what_was_sent_and_the_issuing_ca() -> None:
    members = chain_members(chain(60, 300, 3000))
    assert [(m.role, m.cert.subject) for m in members] == [
        (LEAF, "CN=app.example.org"),
        (INTERMEDIATE, "CN=intermediate CA"),
        (ISSUING_CA, "CN=root CA"),
    ]
    sent = chain_members(chain(60, 300, 3000, send_root=True))
    assert [m.role for m in sent] == [LEAF, INTERMEDIATE, ROOT]
    # a bundle CA that was also sent is counted once
    check = chain(60, 300, 3000, send_root=True)
    again = replace(check, issuer_ca=check.served_chain[-1])
    assert [m.role for m in chain_members(again)] == [LEAF, INTERMEDIATE, ROOT]
    assert chain_members(EndpointCheck("down", "https://x:1", error="refused")) == []


def test_an_intermediate_expiring_first_is_named_and_not_renewed_as_a_leaf() -> None:
    check = chain(leaf=60, intermediate=5, root=3000)
    first = expires_first(check)
    assert first is not None and first.label == "intermediate CN=intermediate CA"
    v = judge_certificate(check, NOW)
    assert (v.verdict, v.severity, v.threshold_days) == (EXPIRING, "P2", 7.0)
    assert v.days_left == pytest.approx(5)
    assert "the intermediate CN=intermediate CA expires in 5.0 days" in v.message
    assert "the leaf" in v.message  # and when the leaf itself expires
    assert v.row()["expires_first"] == "intermediate CN=intermediate CA"
    assert v.as_dict()["expires_first"] == "intermediate CN=intermediate CA"
    assert check.certificate is not None and v.as_dict()["serial"] == check.certificate.serial
    # a new leaf signed under it would not outlive it: no renew-certificate, the CA named
    assert to_renew([v]) == [] and auto_renewals([v], 7) == []
    (notice,) = notices([v])
    assert "endpoint=app" not in notice.body
    assert "renew the intermediate CN=intermediate CA first" in notice.body


def test_the_issuing_ca_of_the_bundle_counts_when_it_expires_first() -> None:
    v = judge_certificate(chain(leaf=90, intermediate=300, root=20), NOW)
    assert (v.verdict, v.severity) == (RENEW, "P3")
    assert v.first is not None and v.first.role == ISSUING_CA
    assert "the issuing CA CN=root CA expires in 20.0 days" in v.message
    expired = judge_certificate(chain(leaf=90, intermediate=300, root=-2), NOW)
    assert (expired.verdict, expired.severity) == (EXPIRED, "P2")
    assert "the issuing CA CN=root CA expired 2.0 days ago" in expired.message


def test_a_sent_root_counts_too() -> None:
    v = judge_certificate(chain(leaf=90, intermediate=300, root=3, send_root=True), NOW)
    assert v.verdict == EXPIRING and v.first is not None and v.first.label == "root CN=root CA"


def test_a_leaf_that_expires_first_is_judged_and_renewed_as_before() -> None:
    v = judge_certificate(chain(leaf=5, intermediate=300, root=3000), NOW)
    assert v.first is not None and v.first.role == LEAF and v.leaf_first
    assert "the certificate expires in 5.0 days" in v.message
    assert to_renew([v]) == ["app"] and auto_renewals([v], 7) == [v]
    healthy = judge_certificate(chain(leaf=80, intermediate=300, root=3000), NOW)
    assert (healthy.verdict, healthy.days_left) == (OK, pytest.approx(80))


def test_on_a_tie_the_leaf_is_what_expires_first() -> None:
    check = chain(leaf=5, intermediate=300, root=3000)
    assert check.certificate is not None
    same = replace(
        check, served_chain=(replace(check.served_chain[0], not_after=check.certificate.not_after),)
    )
    first = expires_first(same)
    assert first is not None and first.role == LEAF
