"""Own databases, blocks and S3 prefixes for the backup and restore tests.

Every test backs up its own database (``bktest_<purpose>_<random>``, owned by the ``app``
role like the real one) into its own prefix of the shared bucket, through blocks saved
under its own names; everything is removed afterwards (databases whose names start with the
test database's name too: scratch and replaced copies).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
from psycopg import sql

from blocks.postgres import PostgresTarget
from blocks.storage import BackupStore
from devstack import stack as devstack
from devstack.stack import AWS_REGION, BACKUP_BUCKET, MOTO_KEYS

REPO_ROOT = Path(__file__).resolve().parent.parent


def s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=AWS_REGION,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )


def admin_target(info: Any, database: str = "postgres") -> PostgresTarget:
    secret = devstack.stack_secrets(Path(info.state_dir))["postgres"]
    return PostgresTarget(
        host=info.host, port=info.postgres_port, database=database, user="postgres", password=secret
    )


@dataclass
class BackupEnv:
    """Names and handles of one test's database, blocks and prefix."""

    info: Any
    dbname: str
    db_block: str
    admin_block: str
    store_block: str
    prefix: str
    app: PostgresTarget
    admin: PostgresTarget
    store: BackupStore
    saved: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def client(self) -> Any:
        return s3(self.info.aws_endpoint_url)

    def objects(self) -> list[dict[str, Any]]:
        resp = self.client.list_objects_v2(Bucket=BACKUP_BUCKET, Prefix=self.prefix)
        return sorted(resp.get("Contents", []), key=lambda o: str(o["Key"]))

    def keys(self) -> list[str]:
        return [str(o["Key"]) for o in self.objects()]

    def uploads(self) -> list[dict[str, Any]]:
        resp = self.client.list_multipart_uploads(Bucket=BACKUP_BUCKET, Prefix=self.prefix)
        return list(resp.get("Uploads", []))

    def sql(self, query: str, params: Any = None, database: str | None = None) -> list[Any]:
        with psycopg.connect(self.admin.conninfo(database or self.dbname), autocommit=True) as c:
            cur = c.execute(query, params)
            return cur.fetchall() if cur.description else []

    def databases(self) -> list[str]:
        rows = self.sql(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
            (self.dbname + "%",),
            database="postgres",
        )
        return [r[0] for r in rows]

    def save_store(self, endpoint: str, name: str | None = None, **client_params: Any) -> str:
        """Save (another) BackupStore block on this prefix reaching S3 via ``endpoint``."""
        from prefect_aws import AwsCredentials

        creds = AwsCredentials(
            aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_REGION,
            aws_client_parameters={"endpoint_url": endpoint, **client_params},
        )
        block_name = name or self.store_block
        BackupStore(bucket=BACKUP_BUCKET, prefix=self.prefix, aws_credentials=creds).save(
            block_name, overwrite=True
        )
        self.saved.append((BackupStore, block_name))
        return block_name


def fill(env: BackupEnv, rows: int, payload_bytes: int = 0) -> None:
    """Two tables (with a serial key and a foreign key) and ``rows`` rows of data."""
    env.sql(
        "CREATE TABLE IF NOT EXISTS customers (id bigserial PRIMARY KEY, name text NOT NULL);"
        "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY,"
        " customer_id bigint REFERENCES customers(id), note text, doc jsonb);"
        "CREATE INDEX IF NOT EXISTS orders_customer ON orders(customer_id);"
        "ALTER TABLE customers OWNER TO app; ALTER TABLE orders OWNER TO app"
    )
    env.sql(
        "INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, %s) g",
        (rows,),
    )
    note = "encode(gen_random_bytes(%s), 'base64')" if payload_bytes else "md5(g::text)"
    params: tuple[Any, ...] = (payload_bytes, rows) if payload_bytes else (rows,)
    env.sql("CREATE EXTENSION IF NOT EXISTS pgcrypto")
    env.sql(
        f"INSERT INTO orders (customer_id, note, doc) SELECT 1, {note},"
        " jsonb_build_object('g', g) FROM generate_series(1, %s) g",
        params,
    )


@contextlib.contextmanager
def backup_env(info: Any, purpose: str) -> Iterator[BackupEnv]:
    """A database owned by ``app``, its blocks and an S3 prefix; all removed afterwards."""
    token = secrets.token_hex(3)
    dbname = f"bktest_{purpose}_{token}"
    slug = f"bktest-{purpose.replace('_', '-')}-{token}"
    admin = admin_target(info)
    app_password = devstack.stack_secrets(Path(info.state_dir))["app"]
    with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER app").format(sql.Identifier(dbname)))
    app = PostgresTarget(
        host=info.host, port=info.postgres_port, database=dbname, user="app", password=app_password
    )
    db_admin = admin_target(info, dbname)
    app.save(slug, overwrite=True)
    db_admin.save(f"{slug}-admin", overwrite=True)
    env = BackupEnv(
        info=info,
        dbname=dbname,
        db_block=slug,
        admin_block=f"{slug}-admin",
        store_block=f"{slug}-store",
        prefix=f"tests/{slug}/",
        app=app,
        admin=db_admin,
        store=None,  # type: ignore[arg-type]
    )
    env.saved += [(PostgresTarget, slug), (PostgresTarget, f"{slug}-admin")]
    env.save_store(info.aws_endpoint_url)
    env.store = BackupStore.load(env.store_block)
    try:
        yield env
    finally:
        for name in env.databases():
            with psycopg.connect(admin.conninfo(), autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        client = env.client
        for up in env.uploads():
            client.abort_multipart_upload(
                Bucket=BACKUP_BUCKET, Key=up["Key"], UploadId=up["UploadId"]
            )
        for key in env.keys():
            client.delete_object(Bucket=BACKUP_BUCKET, Key=key)
        for cls, block_name in set(env.saved):
            with contextlib.suppress(Exception):
                cls.delete(block_name)
        _delete_upload_limit(dbname)


def _delete_upload_limit(database: str) -> None:
    """The ``backup-upload-<database>`` limit a backup of the test database created."""
    from prefect.client.orchestration import get_client

    from procedures.upload_lease import limit_name

    with get_client(sync_client=True) as client, contextlib.suppress(Exception):
        client.delete_global_concurrency_limit_by_name(limit_name(database))


@contextlib.contextmanager
def suite_objects(env: BackupEnv) -> Iterator[Callable[[dict[str, Any]], str]]:
    """A ``put(objects)`` that writes the user's suite objects under ``expectations/<db>/``
    (a dict body as JSON, bytes as they are) and returns the folder's ``s3://`` URL; every
    object written is removed afterwards."""
    folder = env.store.key("expectations", env.dbname)
    made: list[str] = []

    def put(objects: dict[str, Any]) -> str:
        for name, body in objects.items():
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            env.client.put_object(Bucket=BACKUP_BUCKET, Key=f"{folder}/{name}", Body=data)
            made.append(f"{folder}/{name}")
        return f"s3://{BACKUP_BUCKET}/{folder}/"

    try:
        yield put
    finally:
        for key in made:
            env.client.delete_object(Bucket=BACKUP_BUCKET, Key=key)
