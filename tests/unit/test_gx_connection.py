"""How Great Expectations reaches PostgreSQL, without services: the URL GX gets (every libpq
setting of the target, never the password) and errors that never show the password."""

from __future__ import annotations

import traceback
from typing import Any

import psycopg
import pytest
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url

from blocks.postgres import PostgresTarget
from opsflows.errors import AuthenticationError, PermanentError, ServiceUnavailable
from tasks.gx_validation import engine_kwargs, gx_errors, sqlalchemy_url

SECRET = "s3cr3t p@ss/w:rd %20 ${HOME} é"


def target(**fields: Any) -> PostgresTarget:
    fields.setdefault("host", "db.internal")
    fields.setdefault("port", 6432)
    return PostgresTarget(database="live", user="app", password=SECRET, **fields)


def driver_params(t: PostgresTarget, database: str) -> dict[str, Any]:
    """What SQLAlchemy's psycopg dialect hands psycopg.connect for GX's engine."""
    url = make_url(sqlalchemy_url(t, database))
    args, params = PGDialect_psycopg().create_connect_args(url)  # type: ignore[no-untyped-call]
    assert args == []
    return {**params, **engine_kwargs(t)["connect_args"]}


def test_the_url_carries_every_libpq_setting_of_the_target() -> None:
    t = target(sslmode="verify-full", connect_timeout=7)
    assert driver_params(t, "app_r20250101_ab12") == {
        "host": "db.internal",
        "port": 6432,
        "dbname": "app_r20250101_ab12",
        "user": "app",
        "password": SECRET,
        "sslmode": "verify-full",
        "connect_timeout": "7",
        "application_name": "opsflows-verify",
        "options": "-c search_path=pg_catalog",
        "keepalives": "1",
        "keepalives_idle": "30",
        "keepalives_interval": "10",
        "keepalives_count": "3",
    }
    assert driver_params(target(), "x")["sslmode"] == "prefer", "the block's default"


def test_the_url_never_holds_the_password() -> None:
    url = sqlalchemy_url(target(sslmode="require"), "live")
    assert "s3cr3t" not in url and "HOME" not in url
    assert make_url(url).password is None


def test_odd_names_a_socket_directory_and_ipv6_round_trip() -> None:
    odd = PostgresTarget(
        host="/var/run/postgresql", database="x", user="ops ${USER}@x", password=SECRET
    )
    params = driver_params(odd, "live db/${HOME}")
    assert params["host"] == "/var/run/postgresql"
    assert (params["user"], params["dbname"]) == ("ops ${USER}@x", "live db/${HOME}")
    url = sqlalchemy_url(odd, "live db/${HOME}")
    assert " " not in url and "${" not in url, "GX validates the URL and substitutes ${...}"
    assert driver_params(target(host="::1"), "x")["host"] == "::1"


def _raised(exc: Exception) -> Exception:
    with pytest.raises(Exception) as info, gx_errors(target(), "validate on app@db/live"):
        raise RuntimeError("GX wrapper") from exc
    return info.value


def _shown(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_gx_errors_are_translated_and_never_show_the_password() -> None:
    leaky = RuntimeError(f"cannot use postgresql+psycopg://app:{SECRET}@db.internal/live")
    err = _raised(leaky)
    assert isinstance(err, PermanentError) and "Great Expectations failed" in str(err)
    assert SECRET not in _shown(err), "neither the message nor a chained exception shows it"

    refused = psycopg.OperationalError('FATAL:  password authentication failed for user "app"')
    assert isinstance(_raised(refused), AuthenticationError)
    down = psycopg.OperationalError(f"connection refused (password={SECRET})")
    err = _raised(down)
    assert isinstance(err, ServiceUnavailable) and SECRET not in _shown(err)
