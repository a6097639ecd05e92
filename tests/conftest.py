"""Markers by folder, and the session-wide local stack for every tier that needs services.

Tests use their own stack (state in ``.devstack-test``, every port chosen free) so they never
disturb a stack started by ``make up``. It is started once per session (or reused when
``make test`` already started it) and left running for the next session; ``make down-test``
stops it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_STATE = REPO / ".devstack-test"
TIERS = ("unit", "integration", "e2e", "reliability", "served")

# Set before anything reads settings or imports Prefect.
os.environ.setdefault("OPSFLOWS_STATE_DIR", str(TEST_STATE))
for _name in (
    "PREFECT",
    "POSTGRES",
    "MOTO",
    "KUBE",
    "APP_STAGING",
    "APP_PRODUCTION",
    "PROMETHEUS",
    "WEBHOOK",
    "NODE_EXPORTER",
    "POSTGRES_EXPORTER",
    "BLACKBOX",
    "ALERTMANAGER",
    "TLS",
):
    os.environ.setdefault(f"OPSFLOWS_{_name}_PORT", "0")
# Alerts fire within seconds on the test stack (as the Makefile's TEST_ENV sets them): every
# rule's `for:` capped at 5 s (machine-wide rules excepted), Alertmanager's group_wait 1 s.
os.environ.setdefault("OPSFLOWS_ALERT_FOR_S", "5")
os.environ.setdefault("OPSFLOWS_ALERT_GROUP_WAIT_S", "1")
os.environ.setdefault("OPSFLOWS_ALERT_GROUP_INTERVAL_S", "5")
# The test stack's services run as an OS user of their own, created by `devstack up` and
# deleted by `make down-test`: every CI run takes the path of a fresh machine.
os.environ.setdefault("OPSFLOWS_OS_USER", "opsflows-test")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")


def _recorded_env() -> dict[str, str]:
    """The env of an already-started test stack, so Prefect is imported pointing at it."""
    from devstack import stack
    from opsflows.settings import Settings

    info = stack.load(Settings())
    return info.client_env() if info else {}


os.environ.update(_recorded_env())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def stack() -> Iterator[object]:
    """The running local stack (started on first use); its ``StackInfo``."""
    from devstack import stack as devstack
    from opsflows.settings import Settings

    info = devstack.up(Settings())
    devstack.export_env(info)
    yield info


@pytest.fixture(scope="session")
def prefect_api(stack: object) -> Iterator[str]:
    """Point this process's Prefect client at the stack's real Prefect server."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    url = stack.prefect_api_url  # type: ignore[attr-defined]
    auth = stack.prefect_auth_string  # type: ignore[attr-defined]
    with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: auth}):
        yield url


@pytest.fixture(scope="session")
def bootstrapped(stack: object, prefect_api: str) -> dict[str, list[str]]:
    """Blocks and concurrency limits saved for the stack (as ``opsflows bootstrap``)."""
    from devstack import stack as devstack
    from devstack.bootstrap import bootstrap
    from opsflows.settings import Settings

    return bootstrap(stack, devstack.stack_secrets(Settings().state_dir))  # type: ignore[arg-type]
