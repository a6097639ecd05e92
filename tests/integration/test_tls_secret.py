"""The TLS Secret against the Kubernetes simulator (served in this process, official client):
issuing from a CA's files, installing the Secret, and the devstack endpoint following it."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from blocks.certificates import CertificateAuthority
from blocks.kube import KubeEnvironment
from devstack import tlsendpoint
from devstack.kubesim import SimServer, run_in_thread
from opsflows.errors import AuthenticationError, ConfigurationError
from tasks import pki
from tasks.certificates import (
    check_authority,
    install_tls_secret,
    issue_certificate,
    read_tls_secret,
)
from tests.kubesim_support import TIMING

SECRET = "web-app-tls"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServer]:
    server = run_in_thread(config=TIMING)
    yield server
    server.stop()


@pytest.fixture
def env(sim: SimServer) -> Iterator[KubeEnvironment]:
    httpx.post(f"{sim.url}/_sim/reset", timeout=5).raise_for_status()
    yield KubeEnvironment(
        environment="production",
        api_url=sim.url,
        namespace="production",
        service_url="http://127.0.0.1:1",
        prometheus_url="http://127.0.0.1:1",
        verify_ssl=False,
    )
    httpx.delete(f"{sim.url}/_sim/faults", timeout=5)


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    cert = tlsendpoint.ensure_ca(tmp_path / "ca")
    return CertificateAuthority(cert_file=str(cert), key_file=str(cert.parent / "ca-key.pem"))


def secret_json(sim: SimServer) -> dict[str, object] | None:
    response = httpx.get(f"{sim.url}/api/v1/namespaces/production/secrets/{SECRET}", timeout=5)
    return None if response.status_code == 404 else dict(response.json())


def test_issued_secret_is_created_then_replaced_then_unchanged(
    sim: SimServer, env: KubeEnvironment, authority: CertificateAuthority
) -> None:
    first = issue_certificate.fn(authority, ["127.0.0.1", "localhost"], 90)
    assert "PRIVATE KEY" not in repr(first) and first.info.names == ("localhost", "127.0.0.1")
    assert install_tls_secret.fn(env, SECRET, first) == "created"
    assert install_tls_secret.fn(env, SECRET, first) == "unchanged"  # a retry finds it done
    assert read_tls_secret.fn(env, SECRET) == first.info
    second = issue_certificate.fn(authority, ["127.0.0.1"], 90)
    assert install_tls_secret.fn(env, SECRET, second) == "replaced"
    stored = secret_json(sim)
    assert stored is not None and stored["type"] == "kubernetes.io/tls"
    data = stored["data"]
    assert isinstance(data, dict) and set(data) == {"tls.crt", "tls.key", "ca.crt"}
    key = base64.b64decode(data["tls.key"]).decode()
    assert key == second.key_pem.get_secret_value()
    annotations = stored["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["opsflows.io/certificate-serial"] == second.info.serial


def test_a_refused_write_leaves_the_old_secret(
    sim: SimServer, env: KubeEnvironment, authority: CertificateAuthority
) -> None:
    install_tls_secret.fn(env, SECRET, issue_certificate.fn(authority, ["h"], 90))
    before = secret_json(sim)
    rule = {"status": 403, "method": "PUT", "path": ".*/secrets/.*", "count": None}
    httpx.post(f"{sim.url}/_sim/faults", json=rule, timeout=5).raise_for_status()
    new = issue_certificate.fn(authority, ["h"], 90)
    with pytest.raises(AuthenticationError, match="write secret web-app-tls") as raised:
        install_tls_secret.fn(env, SECRET, new)
    assert new.key_pem.get_secret_value() not in str(raised.value)
    assert secret_json(sim) == before


def test_an_opaque_secret_of_that_name_is_not_overwritten(
    sim: SimServer, env: KubeEnvironment, authority: CertificateAuthority
) -> None:
    body = {"metadata": {"name": SECRET}, "stringData": {"x": "y"}}
    url = f"{sim.url}/api/v1/namespaces/production/secrets"
    httpx.post(url, json=body, timeout=5).raise_for_status()
    with pytest.raises(ConfigurationError, match="of type Opaque"):
        install_tls_secret.fn(env, SECRET, issue_certificate.fn(authority, ["h"], 90))


def test_check_authority_names_a_missing_or_wrong_ca(tmp_path: Path) -> None:
    missing = CertificateAuthority(
        cert_file=str(tmp_path / "no" / "ca.pem"), key_file=str(tmp_path / "no" / "ca-key.pem")
    )
    with pytest.raises(ConfigurationError, match="does not exist") as raised:
        check_authority.fn(missing, 90)
    assert "devstack up" in str(raised.value)
    cert = tlsendpoint.ensure_ca(tmp_path / "ca")
    other = tlsendpoint.ensure_ca(tmp_path / "other")
    wrong = CertificateAuthority(cert_file=str(cert), key_file=str(other.parent / "ca-key.pem"))
    with pytest.raises(ConfigurationError, match="does not belong"):
        check_authority.fn(wrong, 90)
    right = CertificateAuthority(cert_file=str(cert), key_file=str(cert.parent / "ca-key.pem"))
    assert check_authority.fn(right, 90).subject == "CN=opsflows devstack CA"
    with pytest.raises(ConfigurationError, match="before a 4000-day certificate"):
        check_authority.fn(right, 4000)


def test_the_endpoint_serves_the_secret_when_it_changes(
    sim: SimServer, env: KubeEnvironment, authority: CertificateAuthority, tmp_path: Path
) -> None:
    folder = tmp_path / "tls"
    tlsendpoint.issue(folder, "127.0.0.1", days=5)
    url = f"{sim.url}/api/v1/namespaces/production/secrets/{SECRET}"
    sync = tlsendpoint.SecretSync(folder, url, interval_s=1)
    assert not sync.sync_once()  # no Secret: the files stay
    issued = issue_certificate.fn(authority, ["127.0.0.1"], 90)
    install_tls_secret.fn(env, SECRET, issued)
    assert sync.sync_once()
    served = pki.describe(pki.load_cert((folder / tlsendpoint.CERT_NAME).read_bytes()))
    assert served == issued.info
    key_file = folder / tlsendpoint.KEY_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # a certificate issued to the files later is kept until the Secret changes again
    tlsendpoint.issue(folder, "127.0.0.1", days=5)
    assert not sync.sync_once()
    assert pki.describe(pki.load_cert((folder / "cert.pem").read_bytes())) != issued.info
