"""PostgreSQL from Debian packages, run by an unprivileged OS user (initdb refuses root).

Every role authenticates with a scram-sha-256 password, over TCP and the local socket alike,
so a rotated password is really tested. The superuser ``postgres`` exists for the devstack
and for admin tasks (rotation sets passwords with it); ``app`` owns the ``app`` database the
runbooks operate on; ``opsflows`` owns the operations database (the ``ops_log`` table);
``prefect`` owns the Prefect server's database.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.procs import StartError, as_user, port_open, tail, wait_until

ADMIN_USER = "postgres"
APP_ROLE = "app"
APP_DATABASE = "app"
OPS_ROLE = "opsflows"
OPS_DATABASE = "opsflows"
PREFECT_ROLE = "prefect"
PREFECT_DATABASE = "prefect"
#: Loaded at every start (not only written into a fresh cluster's postgresql.conf): a cluster
#: made before it was needed gets it too. ``pg_stat_statements`` gives the database-slow
#: runbook the slowest statements; its extension is created in the app database
#: (:func:`provision`).
PRELOAD_LIBRARIES = ("pg_stat_statements",)
PRELOAD = "-c shared_preload_libraries=" + ",".join(PRELOAD_LIBRARIES)
#: Every connection is logged, with who, to which database and from where, in UTC: the
#: monthly access-log review (``flows/access_log_review.py``) reads ``postgres.log`` (the
#: ``OPSFLOWS_POSTGRES_LOG_FILE`` the stack's env names) with ``decisions.access_log``, whose
#: parser expects this prefix. Set with ALTER SYSTEM at every ``up`` (a cluster made before
#: it was needed gets it too) and applied by a reload: new sessions log at once.
LOGGING = {
    "log_connections": "on",
    "log_timezone": "UTC",
    "log_line_prefix": "%m [%p] user=%u db=%d client=%h ",
}


def bindir() -> Path:
    """Directory of the newest installed PostgreSQL server binaries."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not candidates:
        raise StartError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; "
            "run `make deps` (apt-get install postgresql)"
        )
    return candidates[-1].parent


def ensure_os_user(user: str) -> None:
    """Create the unprivileged service user when running as root and it is missing."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
            check=True,
        )
        print(f"devstack: created the OS user {user!r} the services run as", file=sys.stderr)


def remove_os_user(user: str) -> bool:
    """Delete the service user (``devstack down --remove-os-user``); True when it existed.

    The test stack runs as a user of its own and removes it when stopped, so every test run
    takes the creation path a fresh machine takes.
    """
    if os.geteuid() != 0:
        return False
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    result = subprocess.run(["userdel", user], capture_output=True, text=True)
    if result.returncode != 0:
        # Another stack of this machine (a second checkout's test stack) still runs as it.
        print(
            f"devstack: kept the OS user {user!r}: {result.stderr.strip() or 'userdel failed'}",
            file=sys.stderr,
        )
        return False
    return True


#: Where the service user's data goes when it cannot reach the state dir (see service_root).
OUTSIDE_ROOT = Path("/var/lib/opsflows-devstack")


def user_can_reach(path: Path, user: str) -> bool:
    """Whether ``user`` can traverse to ``path`` (every ancestor searchable by it)."""
    if os.geteuid() != 0:
        return True  # the services run as ourselves
    probe = as_user(user, ["test", "-x", str(path)])
    return subprocess.run(probe, cwd="/", capture_output=True).returncode == 0


def service_root(state_dir: Path, user: str) -> Path:
    """The folder for the data the service user writes (PostgreSQL, Prometheus).

    The state dir itself when the user can reach it; otherwise (a checkout under ``/root``
    or a ``mktemp -d`` folder, mode 0700) a folder of its own under ``/var/lib``, named for
    the state dir, so two checkouts never share one.
    """
    if user_can_reach(state_dir, user):
        return state_dir
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    root = OUTSIDE_ROOT / digest
    root.mkdir(parents=True, exist_ok=True)
    for folder in (OUTSIDE_ROOT, root):
        folder.chmod(0o755)
    return root


def chown_tree(path: Path, user: str) -> None:
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StartError(
            f"OS user {user!r} does not exist; `opsflows devstack up` creates it (run it as root)"
        ) from None
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _run(argv: list[str], user: str) -> None:
    # cwd "/": the service user may not be allowed into the caller's folder
    result = subprocess.run(as_user(user, argv), capture_output=True, text=True, cwd="/")
    if result.returncode != 0:
        raise StartError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[-800:]}")


def init_cluster(base: Path, user: str, admin_password: str) -> None:
    """initdb a fresh cluster in ``base/data`` (no-op when it exists)."""
    data = base / "data"
    if (data / "PG_VERSION").exists():
        return
    ensure_os_user(user)
    base.mkdir(parents=True, exist_ok=True)
    (base / "run").mkdir(exist_ok=True)
    pwfile = base / "initdb.pw"
    pwfile.write_text(admin_password + "\n")
    pwfile.chmod(0o600)
    chown_tree(base, user)
    try:
        _run(
            [
                str(bindir() / "initdb"),
                "-D",
                str(data),
                "-U",
                ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            user,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# opsflows devstack\n"
            "password_encryption = 'scram-sha-256'\n"
            "max_connections = 200\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            "log_min_duration_statement = 1000\n"
        )


#: The archiving settings live in an include file of postgresql.conf (rewritten at every
#: ``up``), not on the command line: ALTER SYSTEM (postgresql.auto.conf, read after it) can
#: then override them for a while, and RESET returns to them.
ARCHIVE_CONF = "opsflows-archive.conf"


def write_archive_conf(base: Path, folder: Path, timeout_s: int) -> str:
    """Archive every WAL file to S3 with ``wal-push`` (tasks/wal_config.py); the command.

    ``archive_timeout`` switches to a new segment after that many seconds with writes, so a
    quiet database still loses at most that much (the RPO of point-in-time recovery).
    ``archive_mode`` takes effect at a start: :func:`ensure_archiving` restarts for it.
    """
    from tasks.wal_config import archive_command

    command = archive_command(folder)
    data = base / "data"
    settings = {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_timeout": str(timeout_s),
        "wal_compression": "zstd",
        "archive_command": command,
    }
    (data / ARCHIVE_CONF).write_text(
        "# Written by devstack/postgres.py at every `up`; edits are overwritten.\n"
        + "".join(f"{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in settings.items())
    )
    conf = data / "postgresql.conf"
    line = f"include_if_exists = '{ARCHIVE_CONF}'"
    if line not in conf.read_text():
        with conf.open("a") as out:
            out.write(f"\n{line}\n")
    return command


def start(base: Path, user: str, host: str, port: int, timeout: float = 60.0) -> None:
    """Start the cluster with pg_ctl unless it already accepts connections."""
    data = base / "data"
    if is_running(base) and port_open(host, port):
        return
    log = base / "postgres.log"
    log.touch()
    chown_tree(base, user)
    result = subprocess.run(
        as_user(
            user,
            [
                str(bindir() / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                str(int(timeout)),
                "-o",
                f"-p {port} -c listen_addresses={host} -k {base / 'run'} {PRELOAD}",
                "start",
            ],
        ),
        capture_output=True,
        text=True,
        cwd="/",
    )
    if result.returncode != 0 or not wait_until(lambda: port_open(host, port), 10):
        raise StartError(
            f"PostgreSQL did not start on {host}:{port}; see {log}:\n{tail(log)}\n"
            f"{result.stderr.strip()}"
        )


def ensure_archiving(
    base: Path, user: str, host: str, port: int, admin_password: str, command: str
) -> None:
    """Make a running server archive with ``command``: a reload for the command, a restart
    when it runs without ``archive_mode`` (started before archiving was configured)."""
    with psycopg.connect(admin_conninfo(host, port, admin_password), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        mode = conn.execute("SHOW archive_mode").fetchone()
    if mode and mode[0] == "on":
        return
    print("devstack: restarting PostgreSQL to turn on WAL archiving", file=sys.stderr)
    stop(base, user)
    start(base, user, host, port)
    with psycopg.connect(admin_conninfo(host, port, admin_password), autocommit=True) as conn:
        now = conn.execute("SHOW archive_command").fetchone()
    if not now or now[0] != command:
        raise StartError(f"PostgreSQL does not archive with {command!r} (see {ARCHIVE_CONF})")


def is_running(base: Path) -> bool:
    return (base / "data" / "postmaster.pid").exists() and _postmaster_alive(base)


def _postmaster_alive(base: Path) -> bool:
    try:
        pid = int((base / "data" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def stop(base: Path, user: str) -> bool:
    if not is_running(base):
        return False
    subprocess.run(
        as_user(user, [str(bindir() / "pg_ctl"), "-D", str(base / "data"), "-m", "fast", "stop"]),
        capture_output=True,
        cwd="/",
    )
    return True


def remove(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)


def admin_conninfo(host: str, port: int, password: str, dbname: str = "postgres") -> str:
    return psycopg.conninfo.make_conninfo(
        host=host, port=port, user=ADMIN_USER, password=password, dbname=dbname
    )


def provision(host: str, port: int, admin_password: str, passwords: dict[str, str]) -> None:
    """Create the application and operations roles and databases (idempotent); log connections.

    ``passwords`` maps role name to its password; existing roles keep theirs, so a rotated
    password survives ``devstack up``.
    """
    with psycopg.connect(admin_conninfo(host, port, admin_password), autocommit=True) as conn:
        pairs = (
            (APP_ROLE, APP_DATABASE),
            (OPS_ROLE, OPS_DATABASE),
            (PREFECT_ROLE, PREFECT_DATABASE),
        )
        for role, database in pairs:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(passwords[role])
                    )
                )
            has_db = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not has_db:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(role)
                    )
                )
        for name, value in LOGGING.items():
            conn.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        conn.execute("SELECT pg_reload_conf()")
    app = admin_conninfo(host, port, admin_password, dbname=APP_DATABASE)
    with psycopg.connect(app, autocommit=True) as conn:
        # The slowest statements of the app (the database-slow runbook reads the view).
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def reset_password(host: str, port: int, admin_password: str, role: str, password: str) -> None:
    """Set ``role``'s password (the stack's own credential back in force)."""
    with psycopg.connect(admin_conninfo(host, port, admin_password), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )


def provision_monitoring(
    host: str, port: int, admin_password: str, passwords: dict[str, str], monitor_role: str
) -> None:
    """The monitoring role postgres_exporter logs in as, and the ``ops_log`` it reads.

    ``monitor_role`` gets ``pg_monitor`` (every session's activity, locks and sizes, without
    superuser) and may read ``ops_log`` (the backup status). The table is created by its
    owner, the ``opsflows`` role, as the first operation-log write would.
    """
    from opsflows.oplog import DDL

    with psycopg.connect(admin_conninfo(host, port, admin_password), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (monitor_role,))
        if not exists.fetchone():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(monitor_role), sql.Literal(passwords["monitor"])
                )
            )
        conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(monitor_role)))
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(OPS_DATABASE), sql.Identifier(monitor_role)
            )
        )
    ops = psycopg.conninfo.make_conninfo(
        host=host, port=port, user=OPS_ROLE, password=passwords[OPS_ROLE], dbname=OPS_DATABASE
    )
    with psycopg.connect(ops, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute(sql.SQL("GRANT SELECT ON ops_log TO {}").format(sql.Identifier(monitor_role)))
