"""The local stack: every service up, idempotent, password auth, no secrets in the env file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
import psycopg
import pytest

from devstack import procs
from devstack import stack as devstack
from devstack.stack import StackInfo
from opsflows.settings import Settings


def test_every_service_reports_running(stack: StackInfo) -> None:
    status = devstack.status(Settings())
    assert set(status) >= {"prefect", "postgres", "moto", "kubesim", "prometheus"}
    for name in (
        "prefect",
        "postgres",
        "moto",
        "kubesim",
        "app-staging",
        "app-production",
        "prometheus",
    ):
        assert status[name].startswith("running"), (name, status[name])


def test_up_again_reuses_the_running_services(stack: StackInfo) -> None:
    state = Path(stack.state_dir)
    pids = {name: procs.read_pid(state, name) for name in ("prefect", "moto", "kubesim")}
    again = devstack.up(Settings())
    assert again == stack
    assert {name: procs.read_pid(state, name) for name in pids} == pids


def test_postgres_requires_scram_passwords(stack: StackInfo) -> None:
    secrets = stack_secrets(stack)
    base = {"host": stack.host, "port": stack.postgres_port, "dbname": "app", "user": "app"}
    with psycopg.connect(**base, password=secrets["app"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**base, password="not-the-password")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**base)  # no password: trust auth is not configured
    admin = {**base, "user": "postgres", "password": secrets["postgres"]}
    with psycopg.connect(**admin) as conn:
        row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'").fetchone()
    assert row is not None and str(row[0]).startswith("SCRAM-SHA-256$")


def stack_secrets(info: StackInfo) -> dict[str, str]:
    return devstack.stack_secrets(Path(info.state_dir))


def test_env_file_and_stack_json_carry_no_secret(stack: StackInfo) -> None:
    state = Path(stack.state_dir)
    secrets = stack_secrets(stack)
    for name in ("env", "stack.json"):
        text = (state / name).read_text()
        for value in secrets.values():
            assert value not in text
    assert (state / "secrets.json").stat().st_mode & 0o077 == 0
    env = dict(line.split("=", 1) for line in (state / "env").read_text().splitlines())
    assert env["PREFECT_API_URL"] == stack.prefect_api_url
    assert json.loads((state / "stack.json").read_text())["postgres_port"] == stack.postgres_port


def test_moto_moves_the_default_version_with_awscurrent(stack: StackInfo) -> None:
    sm = boto3.client(
        "secretsmanager", endpoint_url=stack.aws_endpoint_url, region_name="us-east-1"
    )
    name = "test/devstack/default-version"
    try:
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    except sm.exceptions.ResourceNotFoundException:
        pass
    sm.create_secret(Name=name, SecretString="one")
    new = sm.put_secret_value(SecretId=name, SecretString="two", VersionStages=["AWSPENDING"])
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    current = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
    sm.update_secret_version_stage(
        SecretId=name,
        VersionStage="AWSCURRENT",
        MoveToVersionId=new["VersionId"],
        RemoveFromVersionId=current,
    )
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "two"
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert previous["SecretString"] == "one"


def test_seeded_cloud_resources_exist(stack: StackInfo) -> None:
    s3 = boto3.client("s3", endpoint_url=stack.aws_endpoint_url, region_name="us-east-1")
    s3.head_bucket(Bucket=devstack.BACKUP_BUCKET)
    sm = boto3.client(
        "secretsmanager", endpoint_url=stack.aws_endpoint_url, region_name="us-east-1"
    )
    described = sm.describe_secret(SecretId=devstack.APP_DB_SECRET)
    assert any("AWSCURRENT" in labels for labels in described["VersionIdsToStages"].values())


def test_a_service_that_cannot_start_names_its_log(tmp_path: Path) -> None:
    service = procs.Service(
        "doomed",
        [sys.executable, "-c", "import sys; print('cannot bind'); sys.exit(3)"],
        procs.tcp_ok("127.0.0.1", procs.free_port()),
        start_timeout=10,
    )
    with pytest.raises(procs.StartError) as info:
        procs.start(tmp_path, service)
    message = str(info.value)
    assert "exited with code 3" in message
    assert str(tmp_path / "logs" / "doomed.log") in message
    assert "cannot bind" in message


def test_prefect_server_keeps_its_state_in_the_stacks_postgres(stack: StackInfo) -> None:
    """The server answers concurrent runs from PostgreSQL (SQLite answered 503 under load)."""
    import httpx

    secrets = stack_secrets(stack)
    conn_args = {"host": stack.host, "port": stack.postgres_port, "dbname": "prefect"}
    with psycopg.connect(**conn_args, user="prefect", password=secrets["prefect"]) as conn:
        flows_table = conn.execute("SELECT to_regclass('public.flow_run')").fetchone()
    assert flows_table == ("flow_run",)
    assert not (Path(stack.state_dir) / "prefect" / "prefect.db").exists()
    # Ten flow runs created at once are all accepted.
    auth = stack.prefect_headers()
    flow = httpx.post(
        f"{stack.prefect_api_url}/flows/", json={"name": "concurrency-probe"}, headers=auth
    )
    flow.raise_for_status()
    import concurrent.futures

    def create(i: int) -> int:
        body = {"flow_id": flow.json()["id"], "name": f"probe-{i}", "state": {"type": "PENDING"}}
        url = f"{stack.prefect_api_url}/flow_runs/"
        return httpx.post(url, json=body, headers=auth, timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(create, range(10)))
    assert codes == [201] * 10


def test_ui_calls_the_api_on_the_servers_own_port(stack: StackInfo) -> None:
    """On any port the UI's settings point at this server (not :4200)."""
    import httpx

    ui = httpx.get(f"{stack.prefect_ui_url}/ui-settings", timeout=10)
    ui.raise_for_status()
    assert ui.json()["api_url"] == stack.prefect_api_url


def test_service_data_leaves_a_folder_the_service_user_cannot_enter(
    stack: StackInfo, tmp_path: Path
) -> None:
    """A checkout under /root or in a `mktemp -d` folder (0700): PostgreSQL's data goes to
    /var/lib, not into a folder initdb cannot open."""
    import os

    from devstack import postgres

    if os.geteuid() != 0:
        pytest.skip("only root runs the services as another user")
    user = Settings().os_user
    closed = tmp_path / "closed"
    (closed / "checkout" / ".devstack").mkdir(parents=True)
    closed.chmod(0o700)
    state = closed / "checkout" / ".devstack"
    assert not postgres.user_can_reach(state, user)
    root = postgres.service_root(state, user)
    assert root.parent == postgres.OUTSIDE_ROOT and postgres.user_can_reach(root, user)
    assert postgres.service_root(state, user) == root  # the same folder every time
    # the running stack's own choice is what it recorded (its state dir when reachable)
    assert postgres.service_root(Path(stack.state_dir), user) == stack.service_root
    root.rmdir()


def test_bootstrap_names_the_services_that_are_down(stack: StackInfo, tmp_path: Path) -> None:
    """A recorded stack whose processes are gone: bootstrap says which, without a traceback."""
    import os
    import subprocess

    recorded = json.loads((Path(stack.state_dir) / "stack.json").read_text())
    recorded["state_dir"] = str(tmp_path)
    (tmp_path / "stack.json").write_text(json.dumps(recorded))
    env = {**os.environ, "OPSFLOWS_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "opsflows.cli", "bootstrap"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "prefect" in done.stderr and "not running" in done.stderr
    assert "opsflows devstack up" in done.stderr


def test_the_prefect_api_refuses_requests_without_the_stacks_credentials(
    stack: StackInfo,
) -> None:
    """PREFECT_SERVER_API_AUTH_STRING: 401 without (or with wrong) credentials; clients get
    them through the stack's env (mode 0600), never in a flow parameter or a log."""
    import base64

    import httpx

    url = f"{stack.prefect_api_url}/deployments/filter"
    assert httpx.post(url, json={}, timeout=10).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"guess").decode()}
    assert httpx.post(url, json={}, headers=wrong, timeout=10).status_code == 401
    assert httpx.post(url, json={}, headers=stack.prefect_headers(), timeout=10).status_code == 200
    # Probes stay open; the UI is told to ask for the password.
    assert httpx.get(f"{stack.prefect_api_url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{stack.prefect_ui_url}/ui-settings", timeout=10).json()["auth"] == "BASIC"
    # Clients get them from client_env(); a shell from api-auth.env (0600), not from env.
    assert stack.client_env()["PREFECT_API_AUTH_STRING"] == stack_secrets(stack)["prefect_api"]
    assert "PREFECT_API_AUTH_STRING" not in stack.env()
    auth_file = Path(stack.state_dir) / "api-auth.env"
    assert auth_file.stat().st_mode & 0o077 == 0, "only the stack's owner reads the credentials"
    assert auth_file.read_text() == f"PREFECT_API_AUTH_STRING={stack.prefect_auth_string}\n"
