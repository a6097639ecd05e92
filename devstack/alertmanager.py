"""Alertmanager for the devstack (Debian's ``prometheus-alertmanager``): config and argv.

Prometheus sends every firing alert here (its ``alerting:`` section). Alertmanager groups them
by ``alertname`` and ``environment``, waits ``group_wait`` for the rest of a group, and posts
each group to one webhook receiver: the version-4 JSON body of ``webhook_configs``, with
``Authorization: Bearer <token>`` read from a ``credentials_file`` (mode 0600, under the
service root; its value is also ``secrets.json``'s ``alertmanager_webhook``). Resolved alerts
are sent too. A ``ServiceDown`` (P1) mutes the ``service-down`` P2/P3 alerts of the same
environment: they are symptoms of the same outage.

Clustering is off (``--cluster.listen-address=``): one instance, and no fixed port 9094 for
two stacks of one machine to fight over.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROUTE_GROUP_BY = ("alertname", "environment")


def _seconds(value: float) -> str:
    return f"{int(value * 1000)}ms" if value < 1 else f"{round(value)}s"


def render_config(
    webhook_url: str,
    token_file: Path,
    *,
    group_wait_s: float = 10,
    group_interval_s: float = 60,
    repeat_interval_s: float = 4 * 3600,
) -> str:
    """The text of ``alertmanager.yml`` (JSON-quoted strings are valid YAML scalars)."""
    q = json.dumps
    return "\n".join(
        [
            "# Written by devstack.alertmanager; edits are overwritten.",
            "route:",
            '  receiver: "opsflows"',
            f"  group_by: [{', '.join(q(label) for label in ROUTE_GROUP_BY)}]",
            f"  group_wait: {_seconds(group_wait_s)}",
            f"  group_interval: {_seconds(group_interval_s)}",
            f"  repeat_interval: {_seconds(repeat_interval_s)}",
            "receivers:",
            '  - name: "opsflows"',
            "    webhook_configs:",
            f"      - url: {q(webhook_url)}",
            "        send_resolved: true",
            "        max_alerts: 0",
            "        http_config:",
            "          authorization:",
            "            type: Bearer",
            f"            credentials_file: {q(str(token_file))}",
            "inhibit_rules:",
            "  - source_matchers: ['alertname=\"ServiceDown\"']",
            "    target_matchers: ['runbook=\"service-down\"', 'severity=~\"P2|P3\"']",
            '    equal: ["environment"]',
            "",
        ]
    )


def write_config(
    base: Path,
    webhook_url: str,
    token: str,
    *,
    group_wait_s: float = 10,
    group_interval_s: float = 60,
    repeat_interval_s: float = 4 * 3600,
) -> Path:
    """Write ``alertmanager.yml``, the token file (0600) and ``data/`` under ``base``."""
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    (base / "data").mkdir(mode=0o755, exist_ok=True)
    token_file = base / "webhook_token"
    token_file.touch(mode=0o600)
    token_file.chmod(0o600)
    token_file.write_text(token)
    config = base / "alertmanager.yml"
    config.write_text(
        render_config(
            webhook_url,
            token_file,
            group_wait_s=group_wait_s,
            group_interval_s=group_interval_s,
            repeat_interval_s=repeat_interval_s,
        )
    )
    config.chmod(0o644)
    return config


def command(config: Path, data_dir: Path, host: str, port: int) -> list[str]:
    """The argv that runs Alertmanager on ``host:port`` (prefix ``runuser`` as root)."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager",
        f"--config.file={config}",
        f"--storage.path={data_dir}",
        f"--web.listen-address={listen}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]
