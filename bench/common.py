"""What the backup and restore benchmarks share: data, a private S3, timing, peak RSS.

The data lives in its own databases on the test stack's PostgreSQL (``bench_data_1x`` and
``bench_data_2x``): pgbench tables plus ``bench_payload``, rows of random base64 text and
JSON making up at least half of the size, so a dump does not compress away. They are
generated server-side with SQL and reused when they already have the right size.

S3 is a private moto server started for the run (never the shared one: multi-gigabyte
uploads would slow every other engineer's tests), stopped at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("OPSFLOWS_STATE_DIR", str(REPO / ".devstack-test"))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from devstack import procs  # noqa: E402
from devstack.stack import AWS_REGION, MOTO_KEYS, StackInfo, load, stack_secrets  # noqa: E402
from opsflows.settings import Settings  # noqa: E402

_RECORDED = load(Settings())
if _RECORDED is not None:  # before Prefect is imported: point it at the test stack
    os.environ.update(_RECORDED.client_env())

MB = 1024 * 1024
#: Target database sizes (MB) for the 1x and 2x runs.
SIZES = {"1x": 1100, "2x": 2200}
#: pgbench accounts + index take roughly this many MB per scale unit.
_PGBENCH_MB_PER_SCALE = 15.0
_PAYLOAD_SHARE = 0.55


def log(message: str) -> None:
    """Progress on stderr (stdout's last line is the JSON result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stack_info() -> StackInfo:
    """The test stack (must be running: ``make test`` or the devstack up command)."""
    info = load(Settings())
    if info is None:
        raise SystemExit("no test stack recorded; start it first (see the Makefile's TEST_ENV)")
    return info


def admin_target(info: StackInfo, database: str = "postgres") -> Any:
    """A superuser PostgresTarget on the test stack (password from the stack's secrets)."""
    from blocks.postgres import PostgresTarget

    password = stack_secrets(Path(info.state_dir))["postgres"]
    return PostgresTarget(
        host=info.host,
        port=info.postgres_port,
        database=database,
        user="postgres",
        password=password,
    )


def _pgbin(name: str) -> str:
    candidate = Path("/usr/lib/postgresql/15/bin") / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def db_size_mb(admin: Any, database: str) -> float:
    with psycopg.connect(admin.conninfo("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
    return float(row[0]) / MB if row else 0.0


def ensure_bench_db(admin: Any, label: str) -> tuple[str, float]:
    """Create (or reuse) the bench database for ``label`` ("1x"/"2x"); its name and MB."""
    target_mb = SIZES[label]
    name = f"bench_data_{label}"
    size = db_size_mb(admin, name)
    if size >= target_mb * 0.95:
        log(f"reusing {name} ({size:.0f} MB)")
        return name, size
    log(f"generating {name} (~{target_mb} MB), this takes a few minutes")
    with psycopg.connect(admin.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    scale = max(1, round(target_mb * (1 - _PAYLOAD_SHARE) / _PGBENCH_MB_PER_SCALE))
    env = {**os.environ, **admin.libpq_env(), "PGDATABASE": name}
    subprocess.run(
        [_pgbin("pgbench"), "-i", "-q", "-I", "dtGvp", "-s", str(scale)],
        env=env,
        check=True,
        capture_output=True,
    )
    with psycopg.connect(admin.conninfo(name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        conn.execute(
            "CREATE TABLE bench_payload (id bigserial PRIMARY KEY, body text NOT NULL,"
            " doc jsonb NOT NULL)"
        )
        batch = 100_000
        while db_size_mb(admin, name) < target_mb:
            conn.execute(
                "INSERT INTO bench_payload (body, doc)"
                " SELECT encode(gen_random_bytes(600), 'base64'),"
                " jsonb_build_object('key', md5(random()::text), 'n', (random()*1e9)::bigint,"
                " 'tags', jsonb_build_array(md5(random()::text), md5(random()::text)),"
                " 'at', now() - random() * interval '365 days')"
                " FROM generate_series(1, %s)",
                (batch,),
            )
        conn.execute("VACUUM ANALYZE")
    size = db_size_mb(admin, name)
    log(f"{name} ready: {size:.0f} MB")
    return name, size


@contextlib.contextmanager
def private_moto(info: StackInfo) -> Iterator[str]:
    """A moto server of our own for this run (its URL); stopped at the end."""
    port = procs.free_port(info.host)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.moto_server", "--host", info.host, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not procs.port_open(info.host, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the private moto server did not start")
            time.sleep(0.2)
        url = f"http://{info.host}:{port}"
        s3_client(url).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


BUCKET = "bench-backups"


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )


@dataclass(frozen=True)
class BenchBlocks:
    """Block names the flow child process loads."""

    database: str
    admin: str
    store: str


def save_blocks(info: StackInfo, database: str, endpoint: str) -> BenchBlocks:
    """PostgresTarget (superuser) and BackupStore blocks for one bench database."""
    from prefect_aws import AwsCredentials

    from blocks.storage import BackupStore

    slug = database.replace("_", "-")
    admin_target(info, database).save(slug, overwrite=True)
    admin_target(info, database).save(f"{slug}-admin", overwrite=True)
    creds = AwsCredentials(
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_REGION,
        aws_client_parameters={"endpoint_url": endpoint},
    )
    BackupStore(bucket=BUCKET, prefix="bench/", aws_credentials=creds).save(
        f"{slug}-store", overwrite=True
    )
    return BenchBlocks(slug, f"{slug}-admin", f"{slug}-store")


#: Where a child writes its own peak RSS when it exits (see :func:`run_child`).
PEAK_FILE_ENV = "OPSFLOWS_BENCH_PEAK_FILE"


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MB since its ``exec``: ``VmHWM``.

    Not ``ru_maxrss``: Linux carries the high-water mark of the process image an ``exec``
    replaced into it, so a child's ``ru_maxrss`` (and what ``wait4`` reports for it) is at
    least the benchmark parent's RSS when it started the child. After the best pipeline's
    2x run that was up to 300 MB, more than the flow ever held.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


if os.environ.get(PEAK_FILE_ENV):
    atexit.register(lambda: Path(os.environ[PEAK_FILE_ENV]).write_text(f"{own_peak_rss_mb():.3f}"))


def run_child(module: str, *args: str) -> tuple[dict[str, Any], float]:
    """Run ``python -m module args`` (a flow), return its JSON result and peak RSS in MB.

    The peak is the child's own (:func:`own_peak_rss_mb`, written when it exits); the tools
    it starts (pg_dump, zstd, pg_restore) are processes of their own, not counted.
    """
    with tempfile.TemporaryDirectory(prefix="bench-peak-") as folder:
        peak_file = Path(folder) / "peak"
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING", PEAK_FILE_ENV: str(peak_file)},
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, _usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"{module} {' '.join(args)} failed with status {status}")
        if not peak_file.exists():
            raise SystemExit(f"{module} did not report its peak RSS (does it import bench.common?)")
        peak = float(peak_file.read_text())
    last = out.decode().strip().splitlines()[-1]
    return json.loads(last), peak


def preload_like_serve() -> None:
    """Import what the serving process's forkserver imports before it forks each run.

    A bench child then starts the way a served run does (every runbook imported, the lazy
    imports and incomplete pydantic models of :mod:`deployments.run_warmup` done), and its
    timer covers what a served run pays on its own clock.
    """
    import importlib

    from deployments.serve import PRELOAD

    for module in PRELOAD:
        importlib.import_module(module)


def warm(admin: Any, database: str) -> None:
    """Read every table once, so neither contender pays for a cold cache."""
    with psycopg.connect(admin.conninfo(database), autocommit=True) as conn:
        tables = conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables"
            " WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            conn.execute(f"SELECT count(*) FROM {table}")


def pgbin(name: str) -> str:
    return _pgbin(name)


def drop_database(admin: Any, name: str) -> None:
    with psycopg.connect(admin.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def emit(result: dict[str, Any]) -> None:
    """The one JSON line the Makefile target ends with."""
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    _info = stack_info()
    _admin = admin_target(_info)
    for _label in sys.argv[1:] or list(SIZES):
        ensure_bench_db(_admin, _label)


def size_summary(bench: str, one: dict[str, float], two: dict[str, float]) -> dict[str, Any]:
    """The JSON figures shared by the 1x/2x size benchmarks (times, ratios, peak RSS, sizes)."""
    return {
        "bench": bench,
        "ratio": round(one["flow_s"] / one["raw_s"], 3),
        "flow_s": round(one["flow_s"], 2),
        "raw_s": round(one["raw_s"], 2),
        "ratio_2x": round(two["flow_s"] / two["raw_s"], 3),
        "flow_s_2x": round(two["flow_s"], 2),
        "raw_s_2x": round(two["raw_s"], 2),
        "peak_rss_mb": round(one["rss"], 1),
        "peak_rss_mb_2x": round(two["rss"], 1),
        "rss_growth": round(two["rss"] / one["rss"] - 1, 3),
        "db_mb": round(one["db_mb"]),
        "db_mb_2x": round(two["db_mb"]),
    }


def best_summary(one: dict[str, float], two: dict[str, float]) -> dict[str, Any]:
    """The flow against the best raw pipeline (``best_s``) at 1x and 2x."""
    return {
        "ratio_best": round(one["flow_s"] / one["best_s"], 3),
        "best_s": round(one["best_s"], 2),
        "ratio_best_2x": round(two["flow_s"] / two["best_s"], 3),
        "best_s_2x": round(two["best_s"], 2),
    }
