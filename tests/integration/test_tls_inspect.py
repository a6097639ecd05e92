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

from blocks.certificates import TlsEndpoint
from decisions.certificates import EXPIRED, HOSTNAME_MISMATCH, OK, UNTRUSTED
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
