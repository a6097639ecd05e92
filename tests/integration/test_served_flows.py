"""Every catalog flow survives the trip a served run makes to its own process.

The runner hands a served run's flow to the run's process by pickling it
(``cloudpickle.dumps(flow)``, see ``deployments/serve.py``); the process unpickles it and
validates the run's parameters against the flow's signature before anything runs. Here each
catalog flow takes exactly that trip into a *fresh* interpreter, which then validates the
deployment's default parameters plus the required ones. A flow module that goes back to
``from __future__ import annotations`` fails here (its annotations become strings whose names
the by-value pickle does not carry: "…Model is not fully defined").
"""

from __future__ import annotations

import json
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest

from tests.support import child_report

#: Parameters the UI's form would require a person to fill in, by deployment.
REQUIRED: dict[str, dict[str, Any]] = {
    "staged-deploy/staged-deploy": {
        "image": "registry.local/web-app:4.2.0",
        "smoke_checks": [{"path": "/health", "expect_status": 200}],
    },
    "hotfix/hotfix": {"image": "registry.local/web-app:4.2.1"},
    "scale/scale": {"environment": "staging", "replicas": 2},
    "restart/restart": {"environment": "staging"},
    "service-down/service-down": {"environment": "staging"},
    "disk-full/disk-full": {"environment": "staging"},
    "connection-pool-exhausted/connection-pool-exhausted": {"environment": "staging"},
    "memory-leak/memory-leak": {"environment": "staging"},
    "database-slow/database-slow": {"environment": "production"},
    "one-pod-down/one-pod-down": {"environment": "staging"},
    "traffic-spike/traffic-spike": {"environment": "staging"},
    "migrate-database/migrate-database": {"migrations_dir": "tests/fixtures/migrations/app"},
    # Not required: the period's start as the UI's form sends it (a string, validated here).
    "access-log-review/access-log-review-monthly": {"since": "2026-11-01T00:00:00+00:00"},
    "access-audit/access-audit-quarterly": {"cluster": "production"},
    "renew-certificate/renew-certificate": {"endpoint": "devstack"},
    "restore-to-time/restore-to-time": {"at": "2026-12-01 12:00:00+00:00"},
    "record-crashed-run/record-crashed-run": {
        "flow_run_id": "prefect.flow-run.6a835ab6-8858-4553-ae9d-bcc8440817f5"
    },
}

#: Runs in the fresh interpreter: unpickle each flow, validate its parameters, report.
CHILD = """
import json, pickle, sys, traceback
report = {}
for name, (data, params) in json.loads(sys.stdin.read()).items():
    try:
        flow = pickle.loads(bytes.fromhex(data))
        validated = flow.validate_parameters(params)
        text = [k for k, v in flow.fn.__annotations__.items() if isinstance(v, str)]
        if text:
            raise TypeError(f"string annotations (from __future__ import annotations?): {text}")
    except Exception:
        report[name] = {"error": traceback.format_exc()[-3000:]}
        continue
    types = {k: type(v[0] if isinstance(v, list) and v else v).__name__
             for k, v in validated.items()}
    report[name] = {"name": flow.name, "keys": sorted(validated), "types": types}
print(json.dumps(report))
"""


def catalog() -> dict[str, Any]:
    from deployments.catalog import runner_deployments

    return {f"{d.flow_name}/{d.name}": d for d in runner_deployments()}


def parameters_for(name: str, deployment: Any) -> dict[str, Any]:
    return {**(deployment.parameters or {}), **REQUIRED.get(name, {})}


@pytest.fixture(scope="module")
def unpickled() -> dict[str, dict[str, Any]]:
    """Every catalog flow, pickled as the runner hands it over, loaded in one fresh process."""
    from deployments.serve import flow_by_module

    payload = {
        name: (cloudpickle.dumps(flow_by_module(d.entrypoint)).hex(), parameters_for(name, d))
        for name, d in catalog().items()
    }
    report: dict[str, dict[str, Any]] = child_report(["-c", CHILD], stdin=json.dumps(payload))
    return report


def test_every_required_parameter_entry_names_a_catalog_deployment() -> None:
    assert set(REQUIRED) <= set(catalog())


@pytest.mark.parametrize("name", sorted(catalog()))
def test_flow_unpickles_and_validates_in_a_fresh_process(
    name: str, unpickled: dict[str, dict[str, Any]]
) -> None:
    deployment = catalog()[name]
    params = parameters_for(name, deployment)
    seen = unpickled[name]
    assert "error" not in seen, f"{name}: {seen.get('error')}"
    assert seen["name"] == deployment.flow_name
    assert set(params) <= set(seen["keys"]), seen
    if "smoke_checks" in params:
        # Validated into the flow's own model, not left as a dict.
        assert seen["types"]["smoke_checks"] == "SmokeCheck"
    if "since" in params:
        assert seen["types"]["since"] == "datetime"


def test_required_parameters_are_exactly_the_ones_the_flows_lack_defaults_for() -> None:
    """A new required parameter must get a value above, or the served run cannot start."""
    from deployments.serve import flow_by_module

    for name, deployment in catalog().items():
        schema = flow_by_module(deployment.entrypoint).parameters
        missing = set(schema.required or []) - set(parameters_for(name, deployment))
        assert not missing, f"{name} needs {sorted(missing)}"
