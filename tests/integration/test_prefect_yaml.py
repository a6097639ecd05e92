"""prefect.yaml: every entrypoint is a real flow that accepts its parameters, the file mirrors
the served catalog, and ``prefect deploy --all`` works against the local Prefect server."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsflows.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "prefect.yaml"
SUFFIX = "-yamltest"
BACKUP = "backup-daily"


def prefect_yaml(text: str | None = None) -> dict[str, Any]:
    data = yaml.safe_load(PREFECT_YAML.read_text() if text is None else text)
    assert isinstance(data, dict)
    return data


def yaml_deployments() -> list[dict[str, Any]]:
    return list(prefect_yaml()["deployments"])


def load_flow(entrypoint: str) -> Any:
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(REPO / entrypoint))


def schedules_of(raw: list[Any]) -> list[tuple[str, str]]:
    return [(str(s["cron"]), str(s.get("timezone") or "UTC")) for s in raw or []]


def limit_of(raw: Any) -> int | None:
    if raw is None:
        return None
    return int(raw["limit"] if isinstance(raw, dict) else raw)


@pytest.mark.parametrize("deployment", yaml_deployments(), ids=lambda d: str(d.get("name")))
def test_entrypoint_is_a_flow_that_accepts_the_parameters(deployment: dict[str, Any]) -> None:
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    assert deployment.get("description"), "every deployment needs a description (UI)"
    flow = load_flow(deployment["entrypoint"])  # fails on a missing file or flow function
    schema = parameter_schema(flow).model_dump_for_openapi()
    params = deployment.get("parameters") or {}
    unknown = set(params) - set(schema["properties"])
    assert not unknown, f"{flow.name} does not accept {sorted(unknown)}"
    errors = validate(params, schema, ignore_required=True)
    assert not errors, errors
    if deployment.get("schedules"):
        # Nobody fills in the form of a scheduled run: every required parameter needs a value.
        missing = set(schema.get("required", [])) - set(params)
        assert not missing, f"scheduled {flow.name} lacks required {sorted(missing)}"


def test_prefect_yaml_deployments_are_generated_from_the_catalog(tmp_path: Path) -> None:
    """One source: the section is what `python -m deployments.prefect_yaml` writes."""
    from deployments import prefect_yaml
    from deployments.catalog import runner_deployments

    current = (REPO / "prefect.yaml").read_text()
    assert prefect_yaml.main(["--check"]) == 0, "run `python -m deployments.prefect_yaml`"
    # A catalog change makes the check fail until the file is regenerated.
    changed = runner_deployments()
    changed[0].description = "a description the file does not have"
    assert prefect_yaml.render(current, changed) != current
    copy = tmp_path / "prefect.yaml"
    copy.write_text(current.replace("name: stack-smoke", "name: stack-smoke-renamed"))
    assert prefect_yaml.main(["--check", "--path", str(copy)]) == 1


def test_prefect_yaml_mirrors_the_served_catalog() -> None:
    from deployments.catalog import runner_deployments

    served = {(d.flow_name, d.name): d for d in runner_deployments()}
    in_yaml = {}
    for dep in yaml_deployments():
        in_yaml[(load_flow(dep["entrypoint"]).name, dep["name"])] = dep
    only_yaml, only_served = sorted(set(in_yaml) - set(served)), sorted(set(served) - set(in_yaml))
    assert not only_yaml and not only_served, (
        f"only in prefect.yaml: {only_yaml}; only in deployments/catalog.py: {only_served}"
    )
    for key, runner in served.items():
        dep = in_yaml[key]
        assert dep["entrypoint"] == runner.entrypoint, key
        crons = [(s.schedule.cron, s.schedule.timezone or "UTC") for s in runner.schedules or []]
        assert schedules_of(dep.get("schedules")) == crons, key
        limit = runner.concurrency_limit
        runner_limit = getattr(limit, "limit", limit)
        assert limit_of(dep.get("concurrency_limit")) == runner_limit, key
        # A parameter written in prefect.yaml must not make a worker run differ from a served
        # one: it equals the catalog's value, or the flow's default when the catalog has none.
        flow = load_flow(dep["entrypoint"])
        defaults = {
            k: v.default
            for k, v in inspect.signature(flow.fn).parameters.items()
            if v.default is not inspect.Parameter.empty
        }
        for name, value in (dep.get("parameters") or {}).items():
            expected = (runner.parameters or {}).get(name, defaults.get(name))
            assert value == expected, (key, name, value, expected)


def test_webhook_routes_start_catalog_deployments_with_parameters_they_accept() -> None:
    from deployments.catalog import runner_deployments
    from deployments.webhook import load_routes

    served = {f"{d.flow_name}/{d.name}": d for d in runner_deployments()}
    for route in load_routes().routes:
        targets = dict(route.allow) if route.allow else {route.deployment: tuple(route.parameters)}
        for deployment, names in targets.items():
            assert deployment in served, f"route {route.name}: no deployment {deployment}"
            flow = load_flow(served[deployment].entrypoint)
            accepted = set(inspect.signature(flow.fn).parameters)
            assert set(names) <= accepted, (route.name, sorted(set(names) - accepted))


def test_work_pool_definitions() -> None:
    """The Kubernetes job variables exist in the prefect-kubernetes base job template."""
    import prefect

    data = prefect_yaml()
    k8s = data["definitions"]["work_pools"]["kubernetes"]
    process = data["definitions"]["work_pools"]["process"]
    assert (process["name"], k8s["name"]) == ("opsflows-process", "opsflows-k8s")
    wanted = {"image", "namespace", "service_account_name", "cpu_request", "memory_request"}
    assert wanted <= set(k8s["job_variables"])
    metadata = (
        Path(prefect.__file__).parent
        / "server/api/collections_data/views/aggregate-worker-metadata.json"
    )
    worker = json.loads(metadata.read_text())["prefect-kubernetes"]["kubernetes"]
    variables = worker["default_base_job_configuration"]["variables"]["properties"]
    assert set(k8s["job_variables"]) <= set(variables)
    # Worker-started runs beat as often as served ones, or the "crash unresponsive runs"
    # automation would crash them while they still run.
    beat = str(int(Settings().run_heartbeat_s))
    for pool in (process, k8s):
        assert pool["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == beat, pool
    # One line switches every runbook to Kubernetes (docs/ci.md relies on it).
    assert PREFECT_YAML.read_text().count("<<: *one_machine") == 1
    assert all(d["work_pool"]["name"] == "opsflows-process" for d in yaml_deployments())


def _ensure_pools() -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name, kind in (("opsflows-process", "process"), ("opsflows-k8s", "kubernetes")):
            try:
                client.read_work_pool(name)
            except ObjectNotFound:
                subprocess.run(
                    [sys.executable, "-m", "prefect", "work-pool", "create", name, "--type", kind],
                    check=True,
                    capture_output=True,
                    cwd=REPO,
                )


def test_prefect_deploy_all_against_the_local_server(prefect_api: str, tmp_path: Path) -> None:
    """``prefect deploy --all`` on a copy of prefect.yaml (renamed, paused deployments).

    Three deployments stand for all: the entrypoints are checked above. One of them is
    deployed with every runbook switched to Kubernetes, so the server validates those job
    variables against the real kubernetes base job template.
    """
    import os

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    raw = PREFECT_YAML.read_text()
    local = prefect_yaml(raw)
    k8s = prefect_yaml(raw.replace("<<: *one_machine", "<<: *kubernetes"))
    picked = [d for d in local["deployments"] if d["name"] in ("stack-smoke", BACKUP)]
    picked += [
        {**d, "name": d["name"] + "-k8s"} for d in k8s["deployments"] if d["name"] == "stack-smoke"
    ]
    for dep in picked:
        dep["name"] += SUFFIX
        dep["paused"] = True  # nothing gets scheduled on the shared server
    local["deployments"] = picked
    copy = tmp_path / "prefect.yaml"
    copy.write_text(yaml.safe_dump(local, sort_keys=False))
    _ensure_pools()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefect",
                "--no-prompt",
                "deploy",
                "--all",
                "--prefect-file",
                str(copy),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "PREFECT_API_URL": prefect_api},
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with get_client(sync_client=True) as client:
            smoke = client.read_deployment_by_name(f"stack-smoke/stack-smoke{SUFFIX}")
            backup = client.read_deployment_by_name(f"backup-database/{BACKUP}{SUFFIX}")
            on_k8s = client.read_deployment_by_name(f"stack-smoke/stack-smoke-k8s{SUFFIX}")
        assert smoke.work_pool_name == backup.work_pool_name == "opsflows-process"
        checkout = {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        assert smoke.pull_steps == [checkout]
        assert [s.schedule.cron for s in backup.schedules] == ["0 2 * * *"]
        assert backup.global_concurrency_limit is not None
        assert backup.global_concurrency_limit.limit == 1
        assert backup.parameter_openapi_schema["properties"]["compression"]
        assert on_k8s.work_pool_name == "opsflows-k8s"
        assert on_k8s.job_variables["namespace"] == "opsflows"
        assert on_k8s.job_variables["service_account_name"] == "opsflows-runner"
        assert on_k8s.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/opsflows"}}
        ]
    finally:
        with get_client(sync_client=True) as client:
            mine = DeploymentFilter(name=DeploymentFilterName(like_=SUFFIX))
            for dep in client.read_deployments(deployment_filter=mine):
                client.delete_deployment(dep.id)
