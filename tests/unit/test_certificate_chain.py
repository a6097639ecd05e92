"""Whole certificate chains, made with `cryptography` as tasks/pki.py makes them: which member
expires first, how it is named, and whether a renewal of the leaf can fix it. Pure, no services."""

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
    INTERMEDIATE,
    ISSUING_CA,
    LEAF,
    OK,
    RENEW,
    ROOT,
    CertInfo,
    EndpointCheck,
    auto_renewals,
    chain_check,
    chain_members,
    expires_first,
    judge_certificate,
    notices,
    to_renew,
)
from tasks import pki

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


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
