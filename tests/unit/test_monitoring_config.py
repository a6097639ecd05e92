"""The monitoring configs the devstack writes, checked by the tools that read them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from devstack import alertmanager, exporters, prometheus
from devstack.stackinfo import StackInfo

REPO = Path(__file__).resolve().parents[2]

MONITORING = prometheus.Monitoring(
    node="127.0.0.1:19100",
    postgres="127.0.0.1:19187",
    blackbox="127.0.0.1:19115",
    alertmanager="127.0.0.1:19093",
    health_urls={"staging": "http://127.0.0.1:18081/health"},
    tls_url="https://127.0.0.1:18443/",
)


def test_prometheus_scrapes_the_exporters_and_alerts_through_alertmanager(tmp_path: Path) -> None:
    config = prometheus.write_config(
        tmp_path,
        {"staging": "127.0.0.1:18081"},
        prometheus.RULES_PATH,
        monitoring=MONITORING,
    )
    data = yaml.safe_load(config.read_text())
    jobs = {job["job_name"]: job for job in data["scrape_configs"]}
    assert set(jobs) == {
        "web-app",
        "node",
        "postgres",
        "alertmanager",
        "blackbox-http",
        "blackbox-tls",
    }
    assert jobs["blackbox-tls"]["params"] == {"module": ["https_cert"]}
    assert jobs["blackbox-http"]["static_configs"][0]["labels"] == {"env": "staging"}
    assert jobs["node"]["static_configs"][0]["labels"] == {"env": "production"}
    targets = data["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["127.0.0.1:19093"]
    check = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "config", str(config)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_alertmanager_config_is_valid_and_groups_by_alertname_and_environment(
    tmp_path: Path,
) -> None:
    config = alertmanager.write_config(tmp_path, "http://127.0.0.1:1/alertmanager", "t0ken")
    data = yaml.safe_load(config.read_text())
    assert data["route"]["group_by"] == ["alertname", "environment"]
    hook = data["receivers"][0]["webhook_configs"][0]
    assert hook["http_config"]["authorization"]["credentials_file"] == str(
        tmp_path / "webhook_token"
    )
    assert "t0ken" not in config.read_text()
    assert (tmp_path / "webhook_token").stat().st_mode & 0o077 == 0
    amtool = shutil.which("amtool") or "amtool"
    check = subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_blackbox_config_is_valid(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    config = exporters.write_blackbox_config(tmp_path, ca)
    binary = shutil.which("prometheus-blackbox-exporter") or "prometheus-blackbox-exporter"
    check = subprocess.run(
        [binary, f"--config.file={config}", "--config.check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_backup_query_reads_what_the_backup_runbook_writes() -> None:
    source = (REPO / "procedures" / "backup.py").read_text()
    assert re.search(r'operation_log\(\s*"database backup"', source)
    # the crashed-run recorder writes the flow's name as the operation
    assert re.search(r'@flow\(\s*name="backup-database"', source)
    assert set(exporters.BACKUP_OPERATIONS) == {"database backup", "backup-database"}
    queries = yaml.safe_load(exporters.BACKUP_QUERIES)
    metrics = {k: v["usage"] for m in queries["opsflows_backup"]["metrics"] for k, v in m.items()}
    assert metrics == {
        "database": "LABEL",
        "last_success_timestamp_seconds": "GAUGE",
        "last_run_failed": "GAUGE",
    }
    # every entry of a backup run names its database, the failed ones too
    assert re.search(r'rec\.details\["database"\] = database', source)


def test_a_stack_json_from_before_the_monitoring_still_loads() -> None:
    old = {
        "state_dir": "/tmp/x",
        "host": "127.0.0.1",
        "prefect_port": 1,
        "postgres_port": 2,
        "moto_port": 3,
        "kube_port": 4,
        "app_staging_port": 5,
        "app_production_port": 6,
        "prometheus_port": 7,
        "webhook_port": 8,
    }
    info = StackInfo(**old)  # type: ignore[arg-type]
    assert info.alertmanager_port == 0
    assert info.alertmanager_token_file == Path("/tmp/x/alertmanager/webhook_token")


def test_every_exporter_metric_the_alert_rules_read_is_queried(tmp_path: Path) -> None:
    """A rule reading an ``opsflows_*`` series the exporter never produces would never fire."""
    from decisions.alert_catalog import rules

    queries_file, _ = exporters.write_postgres_exporter(tmp_path, "not-a-real-password")
    queries = yaml.safe_load(queries_file.read_text())
    offered = {
        f"{name}_{metric}"
        for name, query in queries.items()
        for entry in query["metrics"]
        for metric, spec in entry.items()
        if spec["usage"] != "LABEL"
    }
    read = {name for rule in rules() for name in re.findall(r"opsflows_[a-z_]+", rule.expr)}
    assert {"opsflows_wal_archiver_failing", "opsflows_wal_archiver_oldest_pending_seconds"} <= read
    assert read <= offered, read - offered
