"""A PostgreSQL database the runbooks operate on."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from psycopg.conninfo import make_conninfo
from pydantic import Field, SecretStr

from opsflows.settings import get_settings


def keepalive_params() -> dict[str, str]:
    """libpq TCP keepalives from the settings: a dead peer is noticed in about a minute.

    Without them a connection whose server (or the network to it) vanished waits for the
    kernel's default of two hours; with them every blocked read fails once the probes go
    unanswered. They are part of every connection string and URL this block builds.
    """
    settings = get_settings()
    return {
        "keepalives": "1",
        "keepalives_idle": str(settings.pg_keepalives_idle_s),
        "keepalives_interval": str(settings.pg_keepalives_interval_s),
        "keepalives_count": str(settings.pg_keepalives_count),
    }


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

    def conninfo(
        self,
        database: str | None = None,
        *,
        with_password: bool = True,
        statement_timeout_s: float | None = None,
    ) -> str:
        """A libpq connection string (with the password unless asked not to).

        It carries ``connect_timeout`` and TCP keepalives (:func:`keepalive_params`), and
        the session's ``statement_timeout`` when ``statement_timeout_s`` is given.
        """
        params: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "dbname": database or self.database,
            "user": self.user,
            "sslmode": self.sslmode,
            "connect_timeout": self.connect_timeout,
            "application_name": "opsflows",
            **keepalive_params(),
        }
        if statement_timeout_s is not None:
            params["options"] = f"-c statement_timeout={max(1, round(statement_timeout_s * 1000))}"
        if with_password:
            params["password"] = self.password.get_secret_value()
        return make_conninfo(**params)  # type: ignore[arg-type]

    def tool_dbname(self, database: str | None = None) -> str:
        """``--dbname`` for pg_dump/pg_restore: a connection string with the keepalives.

        No password (that travels in ``PGPASSWORD``, see :meth:`libpq_env`) and no
        ``application_name`` (each tool names its own session: ``pg_dump``, ``pg_restore``).
        """
        return make_conninfo(
            host=self.host,
            port=str(self.port),
            dbname=database or self.database,
            user=self.user,
            sslmode=self.sslmode,
            connect_timeout=str(self.connect_timeout),
            **keepalive_params(),
        )

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
