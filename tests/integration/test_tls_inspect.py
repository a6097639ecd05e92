"""Reading and verifying served certificates over real TLS handshakes (no stack needed).

The devstack's TLS endpoint server runs in a thread on a free port with certificates of a
CA made here; ``tasks.tls.inspect`` connects as the certificate check does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from blocks.certificates import TlsEndpoint
from decisions.certificates import (
    EXPIRED,
    EXPIRING,
    HOSTNAME_MISMATCH,
    OK,
    UNTRUSTED,
    judge_certificate,
)
from devstack import procs, tlsendpoint
from opsflows.errors import ServiceUnavailable
from tasks import pki, tls


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, TlsEndpoint]]:
    """A running ReloadingTLSServer with a 5-day certificate of the CA in ``tmp_path/ca``."""
    tlsendpoint.ensure_ca(tmp_path / "ca")
    folder = tmp_path / "tls"
    tlsendpoint.issue(folder, "127.0.0.1", days=5)
    port = procs.free_port()
    server = tlsendpoint.ReloadingTLSServer(("127.0.0.1", port), folder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, TlsEndpoint(name="local", url=f"https://127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()


def test_the_served_chain_verifies_against_the_ca(served: tuple[Path, TlsEndpoint]) -> None:
    root, endpoint = served
    check = tls.inspect(endpoint, str(root / "ca" / "ca.pem"))
    assert check.chain is not None and check.chain.kind == OK
    assert check.certificate is not None
    assert check.certificate.issuer == "CN=opsflows devstack CA"
    left = check.certificate.not_after - datetime.now(UTC)
    assert timedelta(days=4) < left <= timedelta(days=5)
    assert check.chain_length == 1


def test_another_ca_does_not_trust_it(served: tuple[Path, TlsEndpoint], tmp_path: Path) -> None:
    _, endpoint = served
    other = tlsendpoint.ensure_ca(tmp_path / "other-ca")
    check = tls.inspect(endpoint, str(other))
    assert check.chain is not None and check.chain.kind == UNTRUSTED
    assert check.certificate is not None  # still described


def test_a_name_not_in_the_san_is_a_hostname_mismatch(served: tuple[Path, TlsEndpoint]) -> None:
    root, endpoint = served
    wrong = endpoint.model_copy(update={"server_name": "api.example.org"})
    check = tls.inspect(wrong, str(root / "ca" / "ca.pem"))
    assert check.chain is not None and check.chain.kind == HOSTNAME_MISMATCH


def test_an_expired_certificate_is_read_and_reported_expired(
    served: tuple[Path, TlsEndpoint],
) -> None:
    root, endpoint = served
    ca_cert, ca_key = pki.load_authority(
        (root / "ca" / "ca.pem").read_bytes(), (root / "ca" / "ca-key.pem").read_bytes()
    )
    cert, key = pki.issue_leaf(
        ca_cert, ca_key, ["127.0.0.1"], 1, datetime.now(UTC) - timedelta(days=3)
    )
    tlsendpoint.write_pair(root / "tls", pki.cert_pem(cert), pki.key_pem(key))
    check = tls.inspect(endpoint, str(root / "ca" / "ca.pem"))  # the server reloaded
    assert check.certificate is not None
    assert check.certificate.serial == pki.describe(cert).serial
    assert check.chain is not None and check.chain.kind == EXPIRED


def test_a_closed_port_is_service_unavailable() -> None:
    endpoint = TlsEndpoint(name="down", url=f"https://127.0.0.1:{procs.free_port()}")
    with pytest.raises(ServiceUnavailable, match="down"):
        tls.inspect(endpoint, None, timeout_s=2)


def test_a_mismatched_pair_mid_swap_keeps_serving_the_old_one(
    served: tuple[Path, TlsEndpoint],
) -> None:
    root, endpoint = served
    ca = str(root / "ca" / "ca.pem")
    before = tls.inspect(endpoint, ca).certificate
    other_cert, _ = pki.make_ca("x", 30)
    _, other_key = pki.make_ca("y", 30)
    tlsendpoint.write_pair(root / "tls", pki.cert_pem(other_cert), pki.key_pem(other_key))
    after = tls.inspect(endpoint, ca).certificate
    assert before is not None and after is not None and after.serial == before.serial


def _ca(
    common_name: str,
    days: int,
    path_length: int,
    issuer: tuple[x509.Certificate, pki.PrivateKey] | None = None,
) -> tuple[x509.Certificate, pki.PrivateKey]:
    """A CA made with ``cryptography`` (self-signed without ``issuer``); ``pki.make_ca``'s
    root has path length 0 and cannot sign an intermediate."""
    key = pki.new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(signer, hashes.SHA256())
    )
    return cert, key


def test_every_certificate_sent_and_the_issuing_ca_are_read(
    served: tuple[Path, TlsEndpoint], tmp_path: Path
) -> None:
    """leaf <- intermediate (sent, expiring in 3 days) <- root (the bundle's, not sent): the
    check reads both and the verdict names the intermediate."""
    root_dir, endpoint = served
    root = _ca("chain root", 3650, path_length=1)
    mid_cert, mid_key = _ca("served intermediate", 3, path_length=0, issuer=root)
    leaf, leaf_key = pki.issue_leaf(mid_cert, mid_key, ["127.0.0.1"], 60)
    tlsendpoint.write_pair(
        root_dir / "tls", pki.cert_pem(leaf) + pki.cert_pem(mid_cert), pki.key_pem(leaf_key)
    )
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.cert_pem(root[0]))
    check = tls.inspect(endpoint, str(bundle))
    assert check.chain is not None and check.chain.kind == OK, check.chain
    assert check.certificate is not None and check.certificate.serial == pki.describe(leaf).serial
    assert [c.subject for c in check.served_chain] == ["CN=served intermediate"]
    assert check.chain_length == 2
    assert check.issuer_ca is not None and check.issuer_ca.subject == "CN=chain root"
    verdict = judge_certificate(check, datetime.now(UTC))
    assert (verdict.verdict, verdict.severity) == (EXPIRING, "P2")
    assert (
        verdict.first is not None and verdict.first.label == "intermediate CN=served intermediate"
    )
    # the bundle's CA is not known when the bundle is another CA's: the chain is untrusted
    other = tlsendpoint.ensure_ca(tmp_path / "other-ca")
    untrusted = tls.inspect(endpoint, str(other))
    assert untrusted.issuer_ca is None and untrusted.chain is not None
    assert untrusted.chain.kind == UNTRUSTED


def test_the_stack_ca_is_the_issuing_ca_of_a_leaf_sent_alone(
    served: tuple[Path, TlsEndpoint],
) -> None:
    root, endpoint = served
    check = tls.inspect(endpoint, str(root / "ca" / "ca.pem"))
    assert check.served_chain == ()
    assert check.issuer_ca is not None and check.issuer_ca.subject == "CN=opsflows devstack CA"
