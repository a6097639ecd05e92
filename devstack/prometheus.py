"""Prometheus for the devstack: its config, its argv, its alert rules and the gate queries.

The launcher (``devstack.stack``) calls :func:`write_config` then runs :func:`command` as
the unprivileged service user (``runuser -u opsflows --``). Everything Prometheus touches
lives under the one directory given to :func:`write_config`::

    <dir>/prometheus.yml    scrape job "web-app", one static target per env (label env=...),
                            and with ``monitoring``: jobs node, postgres, blackbox-http,
                            blackbox-tls, alertmanager and the ``alerting:`` section
    <dir>/rules.yml         the alert rules (a copy of RULES_PATH, or the text given)
    <dir>/data/             the TSDB (must be writable by the user running Prometheus)

Queries (also usable by the deploy gates; both return NaN when the window saw no traffic,
and an empty result when the app was never scraped)::

    error_rate_query("production")   share of "/" requests answered 5xx over the window
    p95_latency_query("production")  p95 of "/" request latency in seconds over the window
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tasks.metrics import error_rate_query, p95_latency_query

RULES_PATH = Path(__file__).resolve().parent.parent / "monitoring" / "alert_rules.yml"
JOB = "web-app"
CONFIG_NAME = "prometheus.yml"
RULES_NAME = "rules.yml"
DATA_NAME = "data"
RETENTION = "45d"  # the backfilled history (devstack.backfill) is 30 days
__all__ = ["RULES_PATH", "command", "error_rate_query", "p95_latency_query", "write_config"]


def data_dir(state_dir: Path) -> Path:
    """Where :func:`write_config` puts the TSDB."""
    return state_dir / DATA_NAME


def _target(address: str) -> str:
    """``host:port`` from ``host:port`` or ``http://host:port[/...]``."""
    netloc = urlsplit(address).netloc if "://" in address else address
    if not netloc or ":" not in netloc:
        raise ValueError(f"scrape target must be host:port, got {address!r}")
    return netloc


@dataclass(frozen=True)
class Monitoring:
    """The monitoring parts Prometheus scrapes and alerts through (``host:port`` each).

    The machine, its database and the TLS endpoint carry ``env=infra_env``: the devstack's
    one machine and one PostgreSQL stand for production's.
    """

    node: str
    postgres: str
    blackbox: str
    alertmanager: str
    health_urls: dict[str, str] = field(default_factory=dict)  # env -> URL probed
    tls_url: str = ""
    infra_env: str = "production"
    #: Exporters are slower than the app: scraped every few seconds, not every second.
    interval_s: int = 5


def _monitoring_jobs(m: Monitoring) -> list[str]:
    q = json.dumps
    every = [f"    scrape_interval: {m.interval_s}s", f"    scrape_timeout: {m.interval_s - 1}s"]
    infra = f"        labels: {{env: {q(m.infra_env)}}}"
    lines: list[str] = []
    for job, address in (("node", m.node), ("postgres", m.postgres)):
        lines += [f"  - job_name: {q(job)}", *every, "    static_configs:"]
        lines += [f"      - targets: [{q(_target(address))}]", infra]
    lines += ['  - job_name: "alertmanager"', *every, "    static_configs:"]
    lines += [f"      - targets: [{q(_target(m.alertmanager))}]", infra]
    probes = {"blackbox-http": ("http_2xx", m.health_urls)}
    if m.tls_url:
        probes["blackbox-tls"] = ("https_cert", {m.infra_env: m.tls_url})
    for job, (module, urls) in probes.items():
        lines += [f"  - job_name: {q(job)}", *every, "    metrics_path: /probe"]
        lines += [f"    params: {{module: [{q(module)}]}}", "    static_configs:"]
        for env, url in sorted(urls.items()):
            lines += [f"      - targets: [{q(url)}]", f"        labels: {{env: {q(env)}}}"]
        lines += [
            "    relabel_configs:",
            "      - source_labels: [__address__]",
            "        target_label: __param_target",
            "      - source_labels: [__param_target]",
            "        target_label: instance",
            "      - target_label: __address__",
            f"        replacement: {q(_target(m.blackbox))}",
        ]
    return lines


def render_config(
    targets: dict[str, str], rules_file: Path, monitoring: Monitoring | None = None
) -> str:
    """The text of ``prometheus.yml`` (JSON-quoted strings are valid YAML scalars)."""
    q = json.dumps
    lines = [
        "# Written by devstack.prometheus.write_config; edits are overwritten.",
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "  evaluation_interval: 1s",
        "rule_files:",
        f"  - {q(str(rules_file))}",
        "scrape_configs:",
        f"  - job_name: {q(JOB)}",
        "    metrics_path: /metrics",
        "    static_configs:",
    ]
    for env, address in sorted(targets.items()):
        lines += [
            f"      - targets: [{q(_target(address))}]",
            f"        labels: {{env: {q(env)}}}",
        ]
    if monitoring is not None:
        lines += _monitoring_jobs(monitoring)
        lines += [
            "alerting:",
            "  alertmanagers:",
            "    - static_configs:",
            f"        - targets: [{q(_target(monitoring.alertmanager))}]",
        ]
    return "\n".join(lines) + "\n"


def write_config(
    state_dir: Path,
    targets: dict[str, str],
    rules_path: Path,
    *,
    owner: str | None = None,
    monitoring: Monitoring | None = None,
    rules_text: str | None = None,
) -> Path:
    """Write ``prometheus.yml`` (and a copy of the rules) into ``state_dir``; return its path.

    Works as any user: it creates ``state_dir`` and ``state_dir/data`` with mode 0755 and
    writes world-readable files. Prometheus must run as a user that can write ``data``:
    the current user, or ``owner`` (when running as root the tree is chowned to it; the
    launcher may instead chown it itself). Idempotent.

    Args:
        state_dir: Directory for Prometheus's config and data.
        targets: Environment name to ``host:port`` of its sample app.
        rules_path: Alert rules file to load (usually :data:`RULES_PATH`).
        owner: Unprivileged user that will run Prometheus (chown only when root).
        monitoring: The exporters and Alertmanager to scrape and alert through.
        rules_text: The rules to load instead of a copy of ``rules_path`` (a test stack's
            rules with shortened ``for:``).
    """
    if not targets:
        raise ValueError("at least one scrape target is needed")
    state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    data_dir(state_dir).mkdir(mode=0o755, exist_ok=True)
    rules_copy = state_dir / RULES_NAME
    if rules_text is None:
        shutil.copyfile(rules_path, rules_copy)
    else:
        rules_copy.write_text(rules_text)
    rules_copy.chmod(0o644)
    config = state_dir / CONFIG_NAME
    partial = state_dir / f".{CONFIG_NAME}.tmp"
    partial.write_text(render_config(targets, rules_copy.resolve(), monitoring))
    partial.chmod(0o644)
    os.replace(partial, config)
    if owner is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(owner)
        for root, dirs, files in os.walk(state_dir):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                path = os.path.join(root, name)
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return config


def command(
    config_path: Path,
    data_dir: Path,
    host: str,
    port: int,
    *,
    binary: str | None = None,
    retention: str = RETENTION,
) -> list[str]:
    """The argv that runs Prometheus on ``host:port`` (prefix ``runuser -u USER --`` as root)."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        binary or shutil.which("prometheus") or "prometheus",
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={listen}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]


def reload(base_url: str, timeout: float = 5.0) -> None:
    """Ask a running Prometheus to re-read its config and rules (``POST /-/reload``).

    Raises:
        httpx.HTTPError: Prometheus is unreachable or refused the new config.
    """
    httpx.post(f"{base_url.rstrip('/')}/-/reload", timeout=timeout).raise_for_status()
