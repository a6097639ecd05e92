"""The exporters Prometheus scrapes besides the app: node, postgres and blackbox (Debian's).

Each runs as the stack's unprivileged OS user, like Prometheus, with its files under
``<service_root>/<name>/``:

* ``prometheus-node-exporter``: CPU, memory and filesystems of the machine (textfile
  collector off: nothing of ours writes one; the app's volume is measured by the app).
* ``prometheus-postgres-exporter``: logs in as the ``opsflows_monitor`` role (member of
  ``pg_monitor``, scram password from ``secrets.json`` handed over in a 0600 file, never on a
  command line) to the ``opsflows`` database: connections by state
  (``pg_stat_activity_count``), the oldest transaction (``pg_stat_activity_max_tx_duration``),
  locks (``pg_locks_count``), database sizes (``pg_database_size_bytes``), backends per
  database (``pg_stat_database_numbackends``) and, from the ``ops_log`` table, the backup
  status the alert rules read (:data:`BACKUP_QUERIES`), and the WAL archiver's state from
  ``pg_stat_archiver`` and the archive status folder (:data:`WAL_ARCHIVER_QUERY`).
* ``prometheus-blackbox-exporter``: ``http_2xx`` probes the apps' ``/health``;
  ``https_cert`` probes the TLS endpoint trusting only the stack's own certificate, so
  ``probe_ssl_earliest_cert_expiry`` is its expiry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from devstack import postgres

MONITOR_ROLE = "opsflows_monitor"
#: The operations the backup runbook writes to ``ops_log``: its own entry and the one the
#: crashed-run recorder writes for it (named after the flow).
BACKUP_OPERATIONS = ("database backup", "backup-database")

#: postgres_exporter custom queries (``--extend.query-path``): each database's last backup
#: outcome, labelled ``database`` (the PostgresTarget block the run backed up: the backup
#: runbook's ``details.database``, or the crashed run's parameters). A database never backed
#: up (or rows written before entries named their database) has no series, so a fresh stack
#: does not page; one whose backups all failed reports a last success at 0 (the epoch), which
#: is too old. One stale database alerts on its own, however fresh the others are.
BACKUP_QUERIES = f"""\
opsflows_backup:
  query: |
    SELECT coalesce(details->>'database', details->'parameters'->>'database') AS database,
           coalesce(extract(epoch FROM max(finished_at) FILTER (WHERE status = 'succeeded')), 0)
             AS last_success_timestamp_seconds,
           (array_agg(CASE WHEN status = 'succeeded' THEN 0 ELSE 1 END
                      ORDER BY finished_at DESC))[1] AS last_run_failed
      FROM ops_log
     WHERE operation IN ({", ".join(f"'{op}'" for op in BACKUP_OPERATIONS)})
       AND coalesce(details->>'database', details->'parameters'->>'database') IS NOT NULL
     GROUP BY 1
  master: true
  metrics:
    - database:
        usage: "LABEL"
        description: "the PostgresTarget block backed up"
    - last_success_timestamp_seconds:
        usage: "GAUGE"
        description: "Unix time the last successful database backup finished (0: none yet)"
    - last_run_failed:
        usage: "GAUGE"
        description: "1 when the newest database backup run did not succeed"
"""

#: The WAL archiver of the server the exporter logs in to (point-in-time recovery ends at the
#: last archived WAL file): ``failing`` is 1 while the newest attempt failed (an S3 outage, a
#: refused upload); ``oldest_pending_seconds`` is how long the oldest WAL file waiting to be
#: archived (a ``.ready`` file, readable by ``pg_monitor``) has waited, which also grows when
#: the archive command hangs or the archiver is stopped without ever failing.
WAL_ARCHIVER_QUERY = """\
opsflows_wal_archiver:
  query: |
    SELECT (current_setting('archive_mode') <> 'off')::int AS enabled,
           archived_count, failed_count,
           coalesce(extract(epoch FROM last_archived_time), 0) AS last_archived_timestamp_seconds,
           (last_failed_time IS NOT NULL
            AND last_failed_time > coalesce(last_archived_time, '-infinity'))::int AS failing,
           (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')
             AS pending_files,
           (SELECT coalesce(extract(epoch FROM now() - min(modification)), 0)
              FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') AS oldest_pending_seconds
      FROM pg_stat_archiver
  master: true
  metrics:
    - enabled:
        usage: "GAUGE"
        description: "1 when archive_mode is on"
    - archived_count:
        usage: "COUNTER"
        description: "WAL files archived since the statistics were reset"
    - failed_count:
        usage: "COUNTER"
        description: "failed attempts to archive a WAL file"
    - last_archived_timestamp_seconds:
        usage: "GAUGE"
        description: "Unix time the last WAL file was archived (0: none yet)"
    - failing:
        usage: "GAUGE"
        description: "1 while the newest archiving attempt failed"
    - pending_files:
        usage: "GAUGE"
        description: "WAL files waiting to be archived"
    - oldest_pending_seconds:
        usage: "GAUGE"
        description: "how long the oldest WAL file waiting to be archived has waited (0: none)"
"""

BLACKBOX_CONFIG = """\
# Written by devstack.exporters; edits are overwritten.
modules:
  http_2xx:
    prober: http
    timeout: 3s
    http:
      preferred_ip_protocol: ip4
  https_cert:
    prober: http
    timeout: 3s
    http:
      preferred_ip_protocol: ip4
      fail_if_not_ssl: true
      tls_config:
        ca_file: {ca_file}
"""


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/bin/{name}"


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def node_exporter_command(host: str, port: int) -> list[str]:
    return [
        _binary("prometheus-node-exporter"),
        f"--web.listen-address={_listen(host, port)}",
        "--no-collector.textfile",
        "--no-collector.systemd",  # Debian turns it on; no systemd in containers
        "--log.level=warn",
    ]


def write_postgres_exporter(base: Path, password: str) -> tuple[Path, Path]:
    """The queries file and the password file (0600) of postgres_exporter under ``base``."""
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    queries = base / "queries.yml"
    queries.write_text(BACKUP_QUERIES + WAL_ARCHIVER_QUERY)
    queries.chmod(0o644)
    secret = base / "password"
    secret.touch(mode=0o600)
    secret.chmod(0o600)
    secret.write_text(password)
    return queries, secret


def postgres_exporter_command(host: str, port: int, queries: Path) -> list[str]:
    return [
        _binary("prometheus-postgres-exporter"),
        f"--web.listen-address={_listen(host, port)}",
        f"--extend.query-path={queries}",
        "--log.level=warn",
    ]


def postgres_exporter_env(host: str, pg_port: int, password_file: Path) -> dict[str, str]:
    """Connection settings by environment: the password only as a file path."""
    return {
        "DATA_SOURCE_URI": f"{host}:{pg_port}/{postgres.OPS_DATABASE}?sslmode=disable",
        "DATA_SOURCE_USER": MONITOR_ROLE,
        "DATA_SOURCE_PASS_FILE": str(password_file),
    }


def write_blackbox_config(base: Path, ca_file: Path) -> Path:
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    config = base / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG.format(ca_file=ca_file))
    config.chmod(0o644)
    return config


def blackbox_command(config: Path, host: str, port: int) -> list[str]:
    return [
        _binary("prometheus-blackbox-exporter"),
        f"--config.file={config}",
        f"--web.listen-address={_listen(host, port)}",
        "--log.level=warn",
    ]
