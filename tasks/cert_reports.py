"""The certificate runbooks' artifacts: the check's table and the renewal's before/after."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.artifacts import create_table_artifact

from decisions.certificates import CertInfo, CertVerdict, EndpointCheck
from opsflows import retry

CHECK_KEY = "certificate-check"
RENEW_KEY = "certificate-renewal"


@task(name="publish certificate report", **retry.NETWORK)
def publish_check(verdicts: Sequence[CertVerdict], now_text: str) -> None:
    """One row per endpoint (key ``certificate-check``)."""
    create_table_artifact(
        key=CHECK_KEY,
        table=[v.row() for v in verdicts],
        description=f"Certificate check at {now_text}: served chains against the CA bundle",
    )


def _row(when: str, cert: CertInfo | None, chain: str, note: str = "") -> dict[str, str]:
    return {
        "when": when,
        "serial": cert.serial if cert else "",
        "fingerprint": cert.fingerprint[:16] + "…" if cert else "",
        "issuer": cert.issuer if cert else "",
        "not_after": cert.not_after.strftime("%Y-%m-%d %H:%M UTC") if cert else "",
        "chain_ok": chain,
        "note": note,
    }


@task(name="publish renewal report", **retry.NETWORK)
def publish_renewal(endpoint: str, before: EndpointCheck, after: EndpointCheck) -> None:
    """What the endpoint served before and after (key ``certificate-renewal``); no key."""
    create_table_artifact(
        key=RENEW_KEY,
        table=[
            _row(
                "before",
                before.certificate,
                before.chain.cell() if before.chain else "",
                before.error or "",
            ),
            _row(
                "after",
                after.certificate,
                after.chain.cell() if after.chain else "",
                after.error or "",
            ),
        ],
        description=f"Certificate of {endpoint} renewed",
    )
