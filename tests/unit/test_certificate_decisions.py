"""Certificate verdicts, chain classification, notices and renewal checks: pure, no services
(whole chains of real certificates: test_certificate_chain.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from decisions.certificates import (
    EXPIRED,
    EXPIRING,
    HOSTNAME_MISMATCH,
    OK,
    RENEW,
    UNREACHABLE,
    UNTRUSTED,
    VERIFY_FAILED,
    CertInfo,
    EndpointCheck,
    auto_renewals,
    chain_check,
    check_renew_within,
    check_renewal,
    check_renewal_days,
    days_left,
    endpoint_for_instance,
    judge_certificate,
    notices,
    to_renew,
)
from opsflows.errors import ConfigurationError
from opsflows.thresholds import THRESHOLDS, Thresholds

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
