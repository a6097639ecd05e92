"""What a TLS endpoint serves: its certificate chain, verified as a client verifies it.

Two handshakes per endpoint: the first verifies nothing and reads the served chain (so an
expired or untrusted certificate can still be described); the second is an ordinary client
handshake (OpenSSL, the CA bundle, the hostname, the current time), whose verification error
:func:`decisions.certificates.chain_check` classifies. Connection failures are translated
here into :class:`~opsflows.errors.ServiceUnavailable`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from prefect import task

from blocks.certificates import TlsEndpoint
from decisions.certificates import CertInfo, ChainCheck, EndpointCheck, chain_check
from opsflows import retry
from opsflows.errors import ConfigurationError, ServiceUnavailable, VerificationFailed, scrub
from tasks import pki


@contextlib.contextmanager
def tls_errors(endpoint: TlsEndpoint) -> Iterator[None]:
    """Translate a refused connection, a timeout or a failed handshake."""
    try:
        yield
    except ssl.SSLCertVerificationError:
        raise  # a verifying handshake's verdict, handled by the caller
    except (OSError, ssl.SSLError) as exc:
        raise ServiceUnavailable(
            f"TLS to {endpoint.name} ({endpoint.host}:{endpoint.port}): "
            f"{type(exc).__name__}: {scrub(str(exc))}",
            hint="is the endpoint up and its URL in the certificate inventory right?",
        ) from exc


def check_bundle(ca_bundle: str | None) -> None:
    """A configured CA bundle must be a readable PEM file (checked before connecting)."""
    if not ca_bundle:
        return
    path = Path(ca_bundle)
    if not path.is_file():
        raise ConfigurationError(
            f"the CA bundle {ca_bundle} does not exist",
            hint="fix ca_bundle in the certificate inventory block (`opsflows bootstrap` "
            "points it at the stack CA)",
        )
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"the CA bundle {ca_bundle} is not a PEM file") from exc


#: ``_ssl.ENCODING_DER``: the format ``_ssl.Certificate.public_bytes`` takes for DER.
_ENCODING_DER = 2


def _served_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The DER certificates the server sent, leaf first.

    ``SSLSocket.get_unverified_chain`` is public from Python 3.13; on 3.11 and 3.12 the same
    method is on the underlying ``_sslobj``. Without either, the leaf alone.
    """
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    if getter is not None:
        chain = getter() or []
        return [c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in chain]
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _verify(endpoint: TlsEndpoint, ca_bundle: str | None, timeout_s: float) -> ChainCheck:
    context = ssl.create_default_context(cafile=ca_bundle or None)
    try:
        with (
            tls_errors(endpoint),
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=endpoint.verify_name),
        ):
            return chain_check(None)
    except ssl.SSLCertVerificationError as exc:
        return chain_check(exc.verify_code, str(exc.verify_message or ""))


def _bundle(ca_bundle: str | None) -> list[x509.Certificate]:
    """The CA bundle's certificates (none without a bundle or when it cannot be read: the
    verifying handshake reports an untrusted chain then)."""
    if not ca_bundle:
        return []
    try:
        return pki.load_certs(Path(ca_bundle).read_bytes())
    except (OSError, ConfigurationError):
        return []


def issuing_ca(chain: list[x509.Certificate], ca_bundle: str | None) -> CertInfo | None:
    """The bundle's CA that issued the last certificate sent, unless it was sent itself."""
    top = chain[-1]
    if top.subject == top.issuer:  # a self-issued root was sent: nothing above it
        return None
    ca = pki.issuer_of(top, _bundle(ca_bundle))
    return pki.describe(ca) if ca is not None else None


def inspect(endpoint: TlsEndpoint, ca_bundle: str | None, timeout_s: float = 10.0) -> EndpointCheck:
    """Read and verify what ``endpoint`` serves (raises ``ServiceUnavailable`` when it cannot):
    every certificate sent, and the CA of the bundle that issued the chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        tls_errors(endpoint),
        socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=endpoint.verify_name) as tls,
    ):
        chain = _served_chain(tls)
    if not chain:
        raise ServiceUnavailable(f"TLS to {endpoint.name}: the server sent no certificate")
    certs = [pki.load_cert_der(der) for der in chain]
    return EndpointCheck(
        endpoint=endpoint.name,
        url=endpoint.url,
        certificate=pki.describe(certs[0]),
        chain=_verify(endpoint, ca_bundle, timeout_s),
        chain_length=len(chain),
        served_chain=tuple(pki.describe(c) for c in certs[1:]),
        issuer_ca=issuing_ca(certs, ca_bundle),
    )


@task(name="read served certificate", **retry.NETWORK)
def read_served_certificate(
    endpoint: TlsEndpoint, ca_bundle: str | None, timeout_s: float = 10.0
) -> EndpointCheck:
    """Connect with TLS, read the served chain, verify it against the CA bundle and hostname."""
    return inspect(endpoint, ca_bundle, timeout_s)


def observe(endpoint: TlsEndpoint, ca_bundle: str | None, timeout_s: float = 10.0) -> EndpointCheck:
    """:func:`read_served_certificate`, with an endpoint that stays unreachable after the
    retries reported as such instead of raised (a check run reports every endpoint)."""
    try:
        return read_served_certificate(endpoint, ca_bundle, timeout_s)
    except ServiceUnavailable as exc:
        return EndpointCheck(endpoint.name, endpoint.url, error=str(exc))


@task(name="wait until the endpoint serves the new certificate", **retry.ONCE)
def wait_for_served(
    endpoint: TlsEndpoint,
    ca_bundle: str | None,
    fingerprint: str,
    timeout_s: float = 60.0,
    poll_s: float = 0.5,
) -> EndpointCheck:
    """Poll the endpoint until it serves the certificate ``fingerprint``; what it serves then.

    Raises:
        VerificationFailed: it still serves another certificate (or none) after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            seen = inspect(endpoint, ca_bundle, timeout_s=min(10.0, timeout_s))
        except ServiceUnavailable as exc:
            seen = EndpointCheck(endpoint.name, endpoint.url, error=str(exc))
        if seen.certificate is not None and seen.certificate.fingerprint == fingerprint:
            return seen
        if time.monotonic() >= deadline:
            cert = seen.certificate
            now = f"serial {cert.serial}" if cert else f"nothing ({seen.error})"
            raise VerificationFailed(
                f"{endpoint.name} ({endpoint.url}) still serves {now} {timeout_s:.0f} s after "
                f"the new certificate was installed in Secret {endpoint.secret}",
                hint="check that the endpoint's consumer (ingress, mounted Secret) reloads it; "
                "the Secret already holds the new certificate",
            )
        time.sleep(poll_s)
