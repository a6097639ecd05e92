"""X.509 with ``cryptography``: a CA, certificates it signs, and their public facts.

No Prefect and no I/O here, so the devstack's TLS endpoint and ``devstack up`` (which make the
stack CA and the endpoint's first certificate) sign exactly as the ``renew-certificate``
runbook does (``tasks/certificates.py``). Keys are ECDSA P-256; private keys leave this module
only as PEM bytes for a file of mode 0600 or a Kubernetes TLS Secret, never in a message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from decisions.certificates import CertInfo
from opsflows.errors import ConfigurationError

PrivateKey = ec.EllipticCurvePrivateKey
#: Issued certificates start this long before "now", for clocks a little behind ours.
BACKDATE = timedelta(minutes=5)


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def make_ca(
    common_name: str, days: int, now: datetime | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root CA (may sign server certificates only, path length 0)."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _now(now) - BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(_ski(key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Digital signatures always; certificate and CRL signing for a CA only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _san(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hostnames):  # ordered, without duplicates
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_leaf(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    hostnames: Sequence[str],
    days: int,
    now: datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A server certificate for ``hostnames`` (SAN; the first is the CN), signed by the CA."""
    if not hostnames:
        raise ConfigurationError("a certificate needs at least one hostname")
    if days < 1:
        raise ConfigurationError(f"a certificate lasts at least a day, not {days}")
    key = new_key()
    start = _now(now) - BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + BACKDATE + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hostnames), critical=False)
        .add_extension(_ski(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM: for a 0600 file or a TLS Secret only."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_cert(pem: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigurationError(f"{what} is not a PEM certificate") from exc


def load_cert_der(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ConfigurationError("the served certificate is not valid DER") from exc


def load_certs(pem: bytes, what: str = "the CA bundle") -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (none: an empty list)."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        if b"-----BEGIN" not in pem:
            return []
        raise ConfigurationError(f"{what} holds a certificate that is not valid PEM") from exc


def issuer_of(
    cert: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    """The candidate that issued ``cert`` (names and signature), or None."""
    return next((ca for ca in candidates if signed_by(cert, ca)), None)


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """Whether ``ca_cert`` issued ``cert`` (names and signature)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def load_authority(
    cert_data: bytes, key_data: bytes, now: datetime | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """The CA certificate and key, checked: a CA, valid now, the key is the certificate's.

    Raises:
        ConfigurationError: what is wrong, without any key material.
    """
    ca_cert = load_cert(cert_data, "the CA certificate")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            "the CA key is not an unencrypted PEM private key",
            hint="point the CertificateAuthority block at the CA's key file",
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError("the CA key is not an ECDSA key (P-256 expected)")
    constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise ConfigurationError(f"{ca_cert.subject.rfc4514_string()} is not a CA certificate")
    if key.public_key() != ca_cert.public_key():
        raise ConfigurationError("the CA key does not belong to the CA certificate")
    moment = _now(now)
    if not ca_cert.not_valid_before_utc <= moment < ca_cert.not_valid_after_utc:
        raise ConfigurationError(
            f"the CA certificate is not valid now (valid {ca_cert.not_valid_before_utc:%Y-%m-%d}"
            f" to {ca_cert.not_valid_after_utc:%Y-%m-%d})",
            hint="make a new CA (`opsflows devstack up` after removing the old one)",
        )
    return ca_cert, key


def describe(cert: x509.Certificate) -> CertInfo:
    """The certificate's public facts."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        names=tuple(names),
    )
