"""A PostgreSQL database the runbooks operate on."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from psycopg.conninfo import make_conninfo
from pydantic import Field, SecretStr


class PostgresTarget(Block):
    """Connection settings for one PostgreSQL database and the role that uses it.

    The password is a ``SecretStr``: it is sent to the server and to ``pg_dump`` through
    the environment, never placed in a log line, an artifact or a command line.
    """

    _block_type_name: ClassVar[str] = "Opsflows Postgres Target"
    _block_type_slug: ClassVar[str] = "opsflows-postgres-target"
    _description: ClassVar[str | None] = "A PostgreSQL database and the role opsflows uses on it."
    _documentation_url: ClassVar[Any] = "https://www.postgresql.org/docs/current/libpq-connect.html"

    host: str = Field(default="127.0.0.1", description="Server host name or address.")
    port: int = Field(default=5432, description="Server TCP port.")
    database: str = Field(description="Database name.")
    user: str = Field(description="Role to log in as.")
    password: SecretStr = Field(description="Password of the role (scram-sha-256).")
    sslmode: str = Field(default="prefer", description="libpq sslmode.")
    connect_timeout: int = Field(default=5, description="Seconds to wait for a connection.")

    def conninfo(self, database: str | None = None, *, with_password: bool = True) -> str:
        """A libpq connection string (with the password unless asked not to)."""
        params: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "dbname": database or self.database,
            "user": self.user,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout,
            "application_name": "opsflows",
        }
        if with_password:
            params["password"] = self.password.get_secret_value()
        return make_conninfo(**params)  # type: ignore[arg-type]

    def describe(self) -> str:
        """Where this target points, safe to log."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"

    def libpq_env(self) -> dict[str, str]:
        """Environment for libpq tools (``pg_dump``, ``pg_restore``, ``psql``, ``pgbench``)."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password.get_secret_value(),
            "PGDATABASE": self.database,
            "PGSSLMODE": self.sslmode,
            "PGCONNECT_TIMEOUT": str(self.connect_timeout),
        }
