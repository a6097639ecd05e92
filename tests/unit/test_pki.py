"""The CA, the certificates it signs and the devstack's CA files: cryptography only, no services."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from devstack import tlsendpoint
from opsflows.errors import ConfigurationError
from tasks import pki

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def test_a_leaf_is_signed_by_the_ca_with_san_and_server_auth() -> None:
    ca_cert, ca_key = pki.make_ca("test CA", 365, NOW)
    cert, _ = pki.issue_leaf(ca_cert, ca_key, ["127.0.0.1", "localhost", "127.0.0.1"], 5, NOW)
    assert pki.signed_by(cert, ca_cert)
    info = pki.describe(cert)
    assert info.issuer == "CN=test CA" and info.subject == "CN=127.0.0.1"
    assert info.names == ("localhost", "127.0.0.1")  # DNS names, then IPs; no duplicates
    assert info.not_after - NOW == timedelta(days=5)
    assert info.not_before < NOW
    assert len(info.fingerprint) == 64 and int(info.serial, 16) > 0
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_another_ca_did_not_sign_it() -> None:
    ca_cert, ca_key = pki.make_ca("test CA", 365, NOW)
    other, _ = pki.make_ca("other CA", 365, NOW)
    cert, _ = pki.issue_leaf(ca_cert, ca_key, ["h"], 5, NOW)
    assert not pki.signed_by(cert, other)


def test_two_leaves_differ_in_serial_key_and_fingerprint() -> None:
    ca_cert, ca_key = pki.make_ca("test CA", 365, NOW)
    (a, ka), (b, kb) = (pki.issue_leaf(ca_cert, ca_key, ["h"], 90, NOW) for _ in range(2))
    assert pki.describe(a).serial != pki.describe(b).serial
    assert pki.describe(a).fingerprint != pki.describe(b).fingerprint
    assert pki.key_pem(ka) != pki.key_pem(kb)


def test_load_authority_accepts_the_ca_and_its_key() -> None:
    ca_cert, ca_key = pki.make_ca("test CA", 365, NOW)
    loaded, _ = pki.load_authority(pki.cert_pem(ca_cert), pki.key_pem(ca_key), NOW)
    assert loaded == ca_cert


def test_load_authority_refuses_what_cannot_sign() -> None:
    ca_cert, ca_key = pki.make_ca("test CA", 365, NOW)
    other_cert, other_key = pki.make_ca("other CA", 365, NOW)
    leaf, leaf_key = pki.issue_leaf(ca_cert, ca_key, ["h"], 5, NOW)
    with pytest.raises(ConfigurationError, match="does not belong"):
        pki.load_authority(pki.cert_pem(ca_cert), pki.key_pem(other_key), NOW)
    with pytest.raises(ConfigurationError, match="not a CA"):
        pki.load_authority(pki.cert_pem(leaf), pki.key_pem(leaf_key), NOW)
    with pytest.raises(ConfigurationError, match="not valid now"):
        pki.load_authority(pki.cert_pem(ca_cert), pki.key_pem(ca_key), NOW + timedelta(days=400))
    garbage = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ConfigurationError) as caught:
        pki.load_authority(pki.cert_pem(ca_cert), garbage, NOW)
    assert "c2VjcmV0" not in str(caught.value)
    assert other_cert != ca_cert


def test_issue_leaf_refuses_no_names_and_no_days() -> None:
    ca_cert, ca_key = pki.make_ca("test CA", 365, NOW)
    with pytest.raises(ConfigurationError, match="hostname"):
        pki.issue_leaf(ca_cert, ca_key, [], 5, NOW)
    with pytest.raises(ConfigurationError, match="at least a day"):
        pki.issue_leaf(ca_cert, ca_key, ["h"], 0, NOW)


def test_devstack_ca_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    cert_file = tlsendpoint.ensure_ca(ca_dir)
    _, key_file = tlsendpoint.ca_files(ca_dir)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_file.stat().st_mode) == 0o644
    first = cert_file.read_bytes()
    assert tlsendpoint.ensure_ca(ca_dir).read_bytes() == first  # kept, not made again
    ca = pki.load_cert(first)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_issue_signs_with_the_stack_ca_beside_the_folder(tmp_path: Path) -> None:
    ca_cert = pki.load_cert(tlsendpoint.ensure_ca(tmp_path / "ca").read_bytes())
    cert_file = tlsendpoint.issue(tmp_path / "tls", "127.0.0.1", days=5)
    cert = pki.load_cert(cert_file.read_bytes())
    assert pki.signed_by(cert, ca_cert)
    assert "127.0.0.1" in pki.describe(cert).names
    key_file = tmp_path / "tls" / tlsendpoint.KEY_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    expires = tlsendpoint.expires_at(cert_file)
    assert expires is not None and timedelta(days=4) < expires - datetime.now(UTC) <= timedelta(5)


def test_issue_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no stack CA") as caught:
        tlsendpoint.issue(tmp_path / "tls", "127.0.0.1", days=5)
    assert "devstack up" in (caught.value.hint or "")
    assert not (tmp_path / "tls" / tlsendpoint.CERT_NAME).exists()


def test_ensure_reissues_a_certificate_the_ca_did_not_sign(tmp_path: Path) -> None:
    tlsendpoint.ensure_ca(tmp_path / "ca")
    folder = tmp_path / "tls"
    other_cert, other_key = pki.make_ca("someone else", 30)
    tlsendpoint.write_pair(folder, pki.cert_pem(other_cert), pki.key_pem(other_key))
    cert_file = tlsendpoint.ensure(folder, "127.0.0.1", 90)
    ca_cert = pki.load_cert(tlsendpoint.ca_files(tmp_path / "ca")[0].read_bytes())
    assert pki.signed_by(pki.load_cert(cert_file.read_bytes()), ca_cert)
    again = cert_file.read_bytes()
    assert tlsendpoint.ensure(folder, "127.0.0.1", 90).read_bytes() == again  # valid: kept


def test_an_inventory_endpoint_is_https_and_names_what_to_issue_for() -> None:
    from pydantic import ValidationError

    from blocks.certificates import CertificateInventory, TlsEndpoint

    endpoint = TlsEndpoint(name="web", url="https://127.0.0.1:18443", hostnames=["localhost"])
    assert (endpoint.host, endpoint.port, endpoint.verify_name) == ("127.0.0.1", 18443, "127.0.0.1")
    assert endpoint.san() == ["127.0.0.1", "localhost"]
    named = TlsEndpoint(name="api", url="https://10.0.0.1", server_name="api.example.org")
    assert (named.port, named.verify_name, named.san()) == (
        443,
        "api.example.org",
        ["api.example.org"],
    )
    with pytest.raises(ValidationError, match="https://host"):
        TlsEndpoint(name="plain", url="http://127.0.0.1:80")
    inventory = CertificateInventory(endpoints=[endpoint, named])
    assert inventory.endpoint("api") is named
    with pytest.raises(ConfigurationError, match=r"no endpoint 'nope'.*known: web, api"):
        inventory.endpoint("nope")
