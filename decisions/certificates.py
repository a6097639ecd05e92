"""Certificate decisions as pure functions: how a served certificate is judged, what a
renewal must show.

``tasks/tls.py`` connects to an endpoint and reads what it serves into an
:class:`EndpointCheck` (the leaf as :class:`CertInfo`, OpenSSL's verification against the
CA bundle as :class:`ChainCheck`, or why it could not connect); :func:`judge_certificate`
gives the verdict. The expiry thresholds are :data:`opsflows.thresholds.THRESHOLDS`'s, the
same numbers the blackbox exporter's ``CertificateExpiry`` alert fires on::

    what the endpoint serves                        verdict            severity
    nothing (refused, reset, no TLS handshake)      unreachable        P2
    a chain the CA bundle does not trust            untrusted          P2
    a certificate not for the endpoint's host       hostname mismatch  P2
    a certificate past its not_after                expired            P2
    under ``cert_page_days`` (7) days left          expiring           P2
    under ``cert_notify_days`` (30) days left       renew              P3
    anything else                                   ok                 -

Every certificate of the chain counts, not only the leaf: the intermediates and the root the
server sends, and the CA of the bundle that issued the chain's top (``issuer_ca``, the stack
CA on the devstack) when the server does not send it. The days left are the first of them to
expire (:func:`expires_first`, as the blackbox exporter's ``probe_ssl_earliest_cert_expiry``
measures them), and the verdict names which one. Only a leaf that expires first is renewed by
``renew-certificate`` (:func:`to_renew`): a new leaf from an expiring CA would not outlive it.
The daily check renews on its own only inside the page threshold (:func:`auto_renewals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from opsflows.errors import ConfigurationError
from opsflows.thresholds import THRESHOLDS, Thresholds

DAY_S = 86400.0

# OpenSSL's X509_V_ERR_* codes a verification failure is classified by.
_EXPIRED = {10}  # CERT_HAS_EXPIRED
_NOT_YET_VALID = {9}  # CERT_NOT_YET_VALID
_HOSTNAME = {62, 63, 64}  # HOSTNAME_MISMATCH, EMAIL_MISMATCH, IP_ADDRESS_MISMATCH
_UNTRUSTED = {2, 18, 19, 20, 21, 27, 28}  # no issuer, self-signed, not trusted, rejected

OK = "ok"
RENEW = "renew"
EXPIRING = "expiring"
EXPIRED = "expired"
UNTRUSTED = "untrusted"
HOSTNAME_MISMATCH = "hostname mismatch"
NOT_YET_VALID = "not yet valid"
UNREACHABLE = "unreachable"
VERIFY_FAILED = "verification failed"


@dataclass(frozen=True)
class CertInfo:
    """A certificate's public facts (never its key)."""

    subject: str
    issuer: str
    serial: str  # hex
    fingerprint: str  # SHA-256 of the DER, hex
    not_before: datetime
    not_after: datetime
    names: tuple[str, ...] = ()  # subjectAltName DNS names and IP addresses

    def as_dict(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "fingerprint": self.fingerprint,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "names": ", ".join(self.names),
        }


@dataclass(frozen=True)
class ChainCheck:
    """OpenSSL's verification of the served chain against the CA bundle and hostname."""

    kind: str  # OK, EXPIRED, NOT_YET_VALID, HOSTNAME_MISMATCH, UNTRUSTED or VERIFY_FAILED
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == OK

    def cell(self) -> str:
        return "yes" if self.ok else f"no: {self.reason or self.kind}"


def chain_check(verify_code: int | None, verify_message: str = "") -> ChainCheck:
    """Classify a handshake's verification result (``None``: it verified)."""
    if verify_code is None:
        return ChainCheck(OK)
    if verify_code in _EXPIRED:
        kind = EXPIRED
    elif verify_code in _NOT_YET_VALID:
        kind = NOT_YET_VALID
    elif verify_code in _HOSTNAME or "hostname mismatch" in verify_message.lower():
        kind = HOSTNAME_MISMATCH
    elif verify_code in _UNTRUSTED:
        kind = UNTRUSTED
    else:
        kind = VERIFY_FAILED
    return ChainCheck(kind, verify_message or f"OpenSSL verify error {verify_code}")


@dataclass(frozen=True)
class EndpointCheck:
    """What one endpoint served: its leaf and the chain's verification, or why nothing.

    ``served_chain`` is what the server sent after the leaf, in order; ``issuer_ca`` the CA
    of the bundle that issued the last certificate sent (None: not known, or it was sent).
    """

    endpoint: str
    url: str
    certificate: CertInfo | None = None
    chain: ChainCheck | None = None
    chain_length: int = 0
    error: str | None = None  # could not connect or complete a handshake
    served_chain: tuple[CertInfo, ...] = ()
    issuer_ca: CertInfo | None = None


LEAF = "leaf"
INTERMEDIATE = "intermediate"
ROOT = "root"
ISSUING_CA = "issuing CA"


@dataclass(frozen=True)
class ChainMember:
    """One certificate of what a client relies on, and its place in the chain."""

    role: str  # LEAF, INTERMEDIATE, ROOT (sent, self-issued) or ISSUING_CA (from the bundle)
    cert: CertInfo

    @property
    def label(self) -> str:
        return f"{self.role} {self.cert.subject}"


def chain_members(check: EndpointCheck) -> list[ChainMember]:
    """The leaf, each certificate sent after it, and the bundle's issuing CA, in chain order."""
    if check.certificate is None:
        return []
    members = [ChainMember(LEAF, check.certificate)]
    for cert in check.served_chain:
        members.append(ChainMember(ROOT if cert.subject == cert.issuer else INTERMEDIATE, cert))
    sent = {m.cert.fingerprint for m in members}
    if check.issuer_ca is not None and check.issuer_ca.fingerprint not in sent:
        members.append(ChainMember(ISSUING_CA, check.issuer_ca))
    return members


def expires_first(check: EndpointCheck) -> ChainMember | None:
    """The chain's certificate that expires first (the one nearest the leaf on a tie)."""
    members = chain_members(check)
    return min(members, key=lambda m: m.cert.not_after) if members else None


@dataclass(frozen=True)
class CertVerdict:
    """The judgement of one endpoint, with the measurement and the threshold it was judged by."""

    endpoint: str
    url: str
    verdict: str
    severity: str | None
    message: str
    days_left: float | None = None
    threshold_days: float | None = None
    certificate: CertInfo | None = None
    chain: ChainCheck | None = None
    first: ChainMember | None = None  # the chain's certificate that expires first

    @property
    def leaf_first(self) -> bool:
        """Whether the leaf is what expires first (what renew-certificate replaces)."""
        return self.first is None or self.first.role == LEAF

    def row(self) -> dict[str, str]:
        """The report's table row (``not_after`` and ``days_left`` of ``expires_first``)."""
        cert, first = self.certificate, self.first
        return {
            "endpoint": f"{self.endpoint} ({self.url})",
            "subject": cert.subject if cert else "",
            "issuer": cert.issuer if cert else "",
            "expires_first": first.label if first else "",
            "not_after": first.cert.not_after.strftime("%Y-%m-%d %H:%M UTC") if first else "",
            "days_left": "" if self.days_left is None else f"{self.days_left:.1f}",
            "chain_ok": self.chain.cell() if self.chain else "",
            "verdict": self.verdict + (f" ({self.severity})" if self.severity else ""),
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "url": self.url,
            "verdict": self.verdict,
            "severity": self.severity,
            "message": self.message,
            "days_left": None if self.days_left is None else round(self.days_left, 2),
            "threshold_days": self.threshold_days,
            "serial": self.certificate.serial if self.certificate else None,
            "not_after": self.certificate.not_after.isoformat() if self.certificate else None,
            "expires_first": self.first.label if self.first else None,
            "expires_first_not_after": self.first.cert.not_after.isoformat()
            if self.first
            else None,
        }


def days_left(not_after: datetime, now: datetime) -> float:
    """Days from ``now`` until ``not_after`` (negative once expired)."""
    return (not_after - now).total_seconds() / DAY_S


def judge_certificate(
    check: EndpointCheck, now: datetime, thresholds: Thresholds = THRESHOLDS
) -> CertVerdict:
    """The verdict on one endpoint (see the module's table), on the chain's first expiry."""
    where = f"{check.endpoint} ({check.url})"
    cert, first = check.certificate, expires_first(check)
    if cert is None or first is None:
        why = check.error or "no certificate was served"
        return CertVerdict(
            check.endpoint, check.url, UNREACHABLE, "P2", f"{where}: unreachable: {why}"
        )
    left = days_left(first.cert.not_after, now)
    until = f"{first.cert.not_after:%Y-%m-%d %H:%M} UTC"
    what = "the certificate" if first.role == LEAF else f"the {first.label}"
    if first.role != LEAF:  # say how long the leaf itself has
        until += f"; the leaf {cert.not_after:%Y-%m-%d %H:%M} UTC"
    chain = check.chain

    def verdict(kind: str, severity: str | None, message: str, limit: float | None) -> CertVerdict:
        return CertVerdict(
            check.endpoint, check.url, kind, severity, message, left, limit, cert, chain, first
        )

    if chain is not None and not chain.ok and (chain.kind != EXPIRED or left > 0):
        return verdict(
            chain.kind, "P2", f"{where}: {chain.kind}: {chain.reason}; clients refuse it", None
        )
    if left <= 0:
        return verdict(
            EXPIRED, "P2", f"{where}: {what} expired {-left:.1f} days ago ({until})", 0.0
        )
    page, warn = thresholds.cert_page_days, thresholds.cert_notify_days
    if left < page:
        message = f"{where}: {what} expires in {left:.1f} days ({until}), under {page:g}"
        return verdict(EXPIRING, "P2", message, page)
    if left < warn:
        message = f"{where}: {what} expires in {left:.1f} days ({until}), under {warn:g}"
        return verdict(RENEW, "P3", message, warn)
    return verdict(OK, None, f"{where}: {left:.1f} days left ({until})", warn)


@dataclass(frozen=True)
class Notice:
    """One notification of a check run: every finding of one severity."""

    severity: str
    subject: str
    body: str


def notices(verdicts: Sequence[CertVerdict]) -> list[Notice]:
    """One notice per severity found (most severe first); none on a clean run."""
    out = []
    for severity in ("P1", "P2", "P3"):
        found = [v for v in verdicts if v.severity == severity]
        if not found:
            continue
        names = ", ".join(v.endpoint for v in found)
        lines = [f"- {v.message}" for v in found]
        renew = to_renew(found)
        if renew:
            lines.append(
                "Renew with the renew-certificate deployment (endpoint="
                + ", endpoint=".join(renew)
                + ")."
            )
        for v in found:
            if v.verdict in (RENEW, EXPIRING, EXPIRED) and not v.leaf_first and v.first:
                lines.append(
                    f"{v.endpoint}: renew the {v.first.label} first (a new leaf signed under "
                    "it would not outlive it), then the leaf."
                )
        out.append(
            Notice(severity, f"certificates: {len(found)} finding(s): {names}", "\n".join(lines))
        )
    return out


def to_renew(verdicts: Sequence[CertVerdict]) -> list[str]:
    """The endpoints a renewal fixes: under the warning threshold or expired, the leaf first
    to expire (not an unreachable endpoint or an untrusted chain: a new certificate from our
    CA may not help; nor an expiring CA: the new leaf would not outlive it)."""
    renewable = (RENEW, EXPIRING, EXPIRED)
    return [v.endpoint for v in verdicts if v.verdict in renewable and v.leaf_first]


def check_renew_within(days: float, thresholds: Thresholds = THRESHOLDS) -> None:
    """The check renews on its own only what it reports: 0 < days <= the warning threshold."""
    if not 0 < days <= thresholds.cert_notify_days:
        raise ConfigurationError(
            f"renew_within_days={days:g}: must be over 0 and at most "
            f"{thresholds.cert_notify_days:g} (the check reports nothing with more days left)",
            hint=f"use {thresholds.cert_page_days:g} (the page threshold, the default) to "
            f"{thresholds.cert_notify_days:g}",
        )


def auto_renewals(verdicts: Sequence[CertVerdict], within_days: float) -> list[CertVerdict]:
    """What the check renews on its own: a renewable leaf (:func:`to_renew`) with under
    ``within_days`` left, or expired. The others are reported for a person to plan."""
    renewable = set(to_renew(verdicts))
    return [
        v
        for v in verdicts
        if v.endpoint in renewable and v.days_left is not None and v.days_left < within_days
    ]


def _address(url: str) -> tuple[str, int] | None:
    """(host, port) of an ``https://host[:port]`` URL or a ``host:port`` target."""
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.lower(), port or 443


def endpoint_for_instance(instance: str, endpoints: Sequence[tuple[str, str]]) -> str | None:
    """The endpoint (of ``(name, url)`` pairs) a probe's ``instance`` label names: the same
    host and port (443 when none), or None."""
    wanted = _address(instance.strip())
    if wanted is None:
        return None
    return next((name for name, url in endpoints if _address(url) == wanted), None)


def check_renewal_days(days: int, thresholds: Thresholds = THRESHOLDS) -> None:
    """A renewed certificate must outlive the warning threshold, or the next check warns."""
    if days <= thresholds.cert_notify_days:
        raise ConfigurationError(
            f"days={days}: a renewed certificate must be valid for more than "
            f"{thresholds.cert_notify_days:g} days (the certificate check warns under that)",
            hint="use the default (90) or more",
        )
    if days > 398:
        raise ConfigurationError(
            f"days={days}: server certificates last at most 398 days (CA/Browser Forum)",
            hint="use 90 (the default) to 398",
        )


def check_renewal(
    before: CertInfo | None, served: EndpointCheck, issued: CertInfo, now: datetime
) -> list[str]:
    """What is wrong with a renewal, judged on what the endpoint serves afterwards.

    The endpoint must serve the issued certificate (same fingerprint), its chain must verify
    against the CA bundle, and it must be new: another serial and a later not_after than the
    certificate served before (when one was served).
    """
    cert = served.certificate
    if cert is None:
        return [f"{served.url} served no certificate after the renewal: {served.error}"]
    problems = []
    if cert.fingerprint != issued.fingerprint:
        problems.append(f"{served.url} serves serial {cert.serial}, not the issued {issued.serial}")
    if served.chain is not None and not served.chain.ok:
        problems.append(f"{served.url}: the served chain does not verify: {served.chain.reason}")
    if before is not None and cert.serial == before.serial:
        problems.append(f"{served.url} still serves the old serial {before.serial}")
    if before is not None and cert.not_after <= before.not_after:
        problems.append(
            f"{served.url}: not_after {cert.not_after:%Y-%m-%d} is not later than the old "
            f"{before.not_after:%Y-%m-%d}"
        )
    if days_left(cert.not_after, now) <= THRESHOLDS.cert_notify_days:
        problems.append(f"{served.url}: the new certificate expires within the warning window")
    return problems
