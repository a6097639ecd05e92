"""Issue a certificate from the CA and install it as a Kubernetes TLS Secret.

The CA is read from the :class:`~blocks.certificates.CertificateAuthority` block's files and
checked (a CA, valid, the key is its key) before anything changes. The new key lives only in
an :class:`Issued` value (a ``SecretStr``) and the Secret's ``tls.key``: it is never logged,
returned by a flow, put in an artifact or quoted in an error. The Secret is written in one
request (create, or replace at the resourceVersion just read), so a refused write leaves the
old Secret exactly as it was.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from prefect import task
from pydantic import SecretStr

from blocks.certificates import CertificateAuthority
from blocks.kube import KubeEnvironment
from decisions.certificates import CertInfo, days_left
from opsflows import retry
from opsflows.errors import ConfigurationError, NotFoundError
from tasks import pki
from tasks.kube import core_api, kube_errors

TLS_SECRET_TYPE = "kubernetes.io/tls"
SERIAL_ANNOTATION = "opsflows.io/certificate-serial"
NOT_AFTER_ANNOTATION = "opsflows.io/certificate-not-after"
MANAGED_BY = {"app.kubernetes.io/managed-by": "opsflows"}


@dataclass(frozen=True)
class Issued:
    """A certificate just issued, with its key (masked in ``repr``) and the CA's certificate."""

    info: CertInfo
    cert_pem: str
    ca_pem: str
    key_pem: SecretStr


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"the {what} {path} does not exist",
            hint="run `opsflows devstack up` (it makes the stack CA) or fix the "
            "certificate-authority block",
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the {what} {path}: {type(exc).__name__}",
            hint="run the flow as a user that may read the CA files",
        ) from exc


def _authority(authority: CertificateAuthority) -> tuple[Any, pki.PrivateKey]:
    cert = _read(authority.cert_file, "CA certificate")
    key = _read(authority.key_file, "CA key")
    return pki.load_authority(cert, key)


@task(name="check certificate authority", **retry.ONCE)
def check_authority(authority: CertificateAuthority, days: int) -> CertInfo:
    """The CA's facts, after checking it can sign a certificate that lasts ``days``.

    Raises:
        ConfigurationError: a CA file is missing or unreadable, the key is not the CA's, or
            the CA expires before the certificate would.
    """
    ca_cert, _ = _authority(authority)
    info = pki.describe(ca_cert)
    if days_left(info.not_after, datetime.now(UTC)) < days:
        raise ConfigurationError(
            f"the CA {info.subject} expires {info.not_after:%Y-%m-%d}, before a {days}-day "
            "certificate would",
            hint="renew the CA first, or ask for fewer days",
        )
    return info


@task(name="issue certificate", **retry.ONCE)
def issue_certificate(authority: CertificateAuthority, hostnames: list[str], days: int) -> Issued:
    """A new key and a certificate for ``hostnames`` valid ``days`` days, signed by the CA."""
    ca_cert, ca_key = _authority(authority)
    cert, key = pki.issue_leaf(ca_cert, ca_key, hostnames, days)
    return Issued(
        info=pki.describe(cert),
        cert_pem=pki.cert_pem(cert).decode(),
        ca_pem=pki.cert_pem(ca_cert).decode(),
        key_pem=SecretStr(pki.key_pem(key).decode()),
    )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _tls_data(issued: Issued) -> dict[str, str]:
    """The Secret's data (contains the private key: never log it)."""
    return {
        "tls.crt": _b64(issued.cert_pem),
        "tls.key": _b64(issued.key_pem.get_secret_value()),
        "ca.crt": _b64(issued.ca_pem),
    }


def _read_secret(env: KubeEnvironment, name: str) -> Any | None:
    try:
        with kube_errors(env, f"read secret {name}"):
            return core_api(env).read_namespaced_secret(name, env.namespace)
    except NotFoundError:
        return None


@task(name="install TLS secret", **retry.NETWORK)
def install_tls_secret(env: KubeEnvironment, name: str, issued: Issued) -> str:
    """Write ``issued`` into the ``kubernetes.io/tls`` Secret ``name``: created, replaced or
    unchanged (a retry after a lost response finds it written)."""
    current = _read_secret(env, name)
    data = _tls_data(issued)
    if current is not None:
        if current.type != TLS_SECRET_TYPE:
            raise ConfigurationError(
                f"Secret {env.namespace}/{name} is of type {current.type}, not {TLS_SECRET_TYPE}",
                hint="a Secret's type cannot change: name another Secret for the endpoint",
            )
        old = current.data or {}
        if all(hmac.compare_digest(str(old.get(k, "")), v) for k, v in data.items()):
            return "unchanged"
    annotations = {
        SERIAL_ANNOTATION: issued.info.serial,
        NOT_AFTER_ANNOTATION: issued.info.not_after.isoformat(),
    }
    metadata = client.V1ObjectMeta(
        name=name,
        labels={**((current.metadata.labels or {}) if current else {}), **MANAGED_BY},
        annotations={**((current.metadata.annotations or {}) if current else {}), **annotations},
        resource_version=current.metadata.resource_version if current else None,
    )
    body = client.V1Secret(metadata=metadata, type=TLS_SECRET_TYPE, data=data)
    api = core_api(env)
    with kube_errors(env, f"write secret {name}"):
        if current is None:
            api.create_namespaced_secret(env.namespace, body)
            return "created"
        api.replace_namespaced_secret(name, env.namespace, body)
    return "replaced"


@task(name="read TLS secret", **retry.NETWORK)
def read_tls_secret(env: KubeEnvironment, name: str) -> CertInfo | None:
    """The public facts of the certificate in the Secret's ``tls.crt`` (None: no Secret)."""
    secret = _read_secret(env, name)
    if secret is None or not (secret.data or {}).get("tls.crt"):
        return None
    return pki.describe(pki.load_cert(base64.b64decode(secret.data["tls.crt"])))
