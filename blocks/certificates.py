"""Certificates: the endpoints we watch and the CA that issues their certificates.

In production the authority is AWS Certificate Manager (the runbook's "SSL certificates: AWS
Certificate Manager") or a cert-manager issuer; on the local stack it is the devstack CA that
``devstack up`` makes (``<service dir>/ca``), and ``opsflows bootstrap`` saves both blocks.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, field_validator

from opsflows.errors import ConfigurationError


class TlsEndpoint(BaseModel):
    """One HTTPS endpoint whose certificate is checked daily and renewed by the runbook."""

    name: str = Field(description="Short name, used as renew-certificate's `endpoint`.")
    url: str = Field(description="https://host:port of the endpoint.")
    server_name: str | None = Field(
        default=None, description="Hostname to send (SNI) and verify; default: the URL's host."
    )
    environment: str | None = Field(
        default=None,
        description="KubeEnvironment block whose namespace holds the endpoint's TLS Secret "
        "(needed to renew it).",
    )
    secret: str = Field(
        default="web-app-tls", description="The kubernetes.io/tls Secret the endpoint serves."
    )
    hostnames: list[str] = Field(
        default_factory=list,
        description="Names a renewed certificate is for (SAN); default: the server name.",
    )

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"{url!r} is not an https://host[:port] URL")
        return url

    @property
    def host(self) -> str:
        return str(urlsplit(self.url).hostname)

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 443

    @property
    def verify_name(self) -> str:
        return self.server_name or self.host

    def san(self) -> list[str]:
        """The subjectAltName of a renewed certificate (the verified name first)."""
        return list(dict.fromkeys([self.verify_name, *self.hostnames]))


class CertificateInventory(Block):
    """The TLS endpoints the daily certificate check connects to, and the CAs it trusts."""

    _block_type_name: ClassVar[str] = "Opsflows Certificate Inventory"
    _block_type_slug: ClassVar[str] = "opsflows-certificate-inventory"
    _description: ClassVar[str | None] = "TLS endpoints checked daily for certificate expiry."
    _documentation_url: ClassVar[Any] = "https://docs.python.org/3/library/ssl.html"

    endpoints: list[TlsEndpoint] = Field(description="The endpoints to check.")
    ca_bundle: str | None = Field(
        default=None,
        description="PEM file of the CAs a served chain must lead to; empty: the system's.",
    )

    def endpoint(self, name: str) -> TlsEndpoint:
        """The endpoint called ``name``."""
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        known = ", ".join(e.name for e in self.endpoints) or "none"
        raise ConfigurationError(
            f"no endpoint {name!r} in the certificate inventory (known: {known})",
            hint="add it to the inventory block or pass one of the known names",
        )


class CertificateAuthority(Block):
    """The CA renew-certificate signs with: a PEM certificate and its private key file.

    The key file (mode 0600) is read only by the issuing task; its content never reaches a
    parameter, a log or an artifact.
    """

    _block_type_name: ClassVar[str] = "Opsflows Certificate Authority"
    _block_type_slug: ClassVar[str] = "opsflows-certificate-authority"
    _description: ClassVar[str | None] = "A CA (certificate, key file) issuing certificates."
    _documentation_url: ClassVar[Any] = "https://cryptography.io/en/latest/x509/"

    cert_file: str = Field(description="PEM file of the CA certificate.")
    key_file: str = Field(description="PEM file of the CA's private key (mode 0600).")


#: Block document names the local stack saves (``opsflows bootstrap``); the flows default to them.
INVENTORY = "default"
AUTHORITY = "stack-ca"
