"""Rotation steps against Secrets Manager and PostgreSQL.

Secrets Manager: the new credential is stored with ``ClientRequestToken`` = the rotation's token
and ``VersionStages=["AWSPENDING"]``; reads always name a ``VersionStage``; ``finish`` moves
AWSCURRENT with ``RemoveFromVersionId`` = the current version (Secrets Manager then labels the
old one AWSPREVIOUS) and drops AWSPENDING. Every step re-reads the labels first, so running it
twice is harmless.

PostgreSQL: the password is hashed client-side (``PQencryptPasswordConn``, SCRAM-SHA-256) and
only the verifier is sent in ``ALTER ROLE``, so the plain password never reaches the server's
statement log. Whether a role already has a password is checked against its stored verifier.

Credentials travel as :class:`DbCredential` (the password is a ``SecretStr``); nothing here logs
or raises a secret value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from botocore.config import Config
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
from prefect import task
from prefect_aws import AwsCredentials
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from blocks.aws_clients import client_params, new_client
from blocks.postgres import PostgresTarget
from decisions.rotation import CURRENT, PENDING, Labels
from opsflows import retry
from opsflows.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    OpsError,
    PermanentError,
    ServiceUnavailable,
    TransientError,
    VerificationFailed,
)
from tasks.postgres import connect, translate
from tasks.secrets import secrets_client, version_stages
from tasks.storage import aws_errors

_REQUIRED = ("host", "port", "dbname", "username", "password")


class FinishNotApplied(ServiceUnavailable):
    """AWSCURRENT did not move: Secrets Manager was unreachable or refused the move (retryable)."""


class FinishOutcomeUnknown(PermanentError):
    """The move of AWSCURRENT failed and the labels could not be read back: it may have happened.

    Not retried: a retry that cannot read the labels would report "not moved" and invite an
    undo of a credential that may now be current. Read the labels (or rerun) to find out.
    """


class FinishIncomplete(PermanentError):
    """AWSCURRENT moved, but AWSPENDING could not be removed; a rerun finishes the job."""


@dataclass(frozen=True)
class DbCredential:
    """One version of the database secret; ``password`` never prints."""

    username: str
    host: str
    port: int
    dbname: str
    password: SecretStr = field(repr=False)
    version_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: dict[str, Any], version_id: str, where: str) -> DbCredential:
        """Build from a secret's JSON fields (``password`` already a ``SecretStr``)."""
        missing = [k for k in _REQUIRED if data.get(k) in (None, "")]
        if missing:
            raise ConfigurationError(
                f"{where} lacks {', '.join(missing)}",
                hint="store engine, host, port, dbname, username and password in the secret",
            )
        password = data["password"]
        extra = {k: v for k, v in data.items() if k not in _REQUIRED}
        return cls(
            username=str(data["username"]),
            host=str(data["host"]),
            port=int(data["port"]),
            dbname=str(data["dbname"]),
            password=password if isinstance(password, SecretStr) else SecretStr(str(password)),
            version_id=version_id,
            extra=extra,
        )

    def secret_string(self) -> str:
        """The JSON stored in Secrets Manager (contains the password: never log it)."""
        return json.dumps(
            {
                **self.extra,
                "host": self.host,
                "port": self.port,
                "dbname": self.dbname,
                "username": self.username,
                "password": self.password.get_secret_value(),
            }
        )

    def target(self) -> PostgresTarget:
        """An unsaved ``PostgresTarget`` that logs in with this credential."""
        return PostgresTarget(
            host=self.host,
            port=self.port,
            database=self.dbname,
            user=self.username,
            password=self.password,
        )

    def describe(self) -> str:
        """Safe to log: role, server, database and version."""
        return f"{self.username}@{self.host}:{self.port}/{self.dbname} (version {self.version_id})"


def new_credential(current: DbCredential, username: str, version_id: str) -> DbCredential:
    """``current`` with another role and a fresh random password (URL-safe ASCII, 256 bits)."""
    return replace(
        current,
        username=username,
        password=SecretStr(secrets.token_urlsafe(32)),
        version_id=version_id,
    )


# --- Secrets Manager ---------------------------------------------------------------------


@task(name="read secret labels", **retry.NETWORK)
def read_labels(credentials: AwsCredentials, secret_id: str) -> Labels:
    """The secret's versions and their staging labels."""
    return Labels.of(version_stages(credentials, secret_id))


@task(name="read credential", **retry.NETWORK)
def read_credential(
    credentials: AwsCredentials, secret_id: str, stage: str = CURRENT, version_id: str = ""
) -> DbCredential:
    """The credential at ``stage``; with ``version_id``, check that ``stage`` is on that version."""
    client = secrets_client(credentials)
    kwargs: dict[str, str] = {"SecretId": secret_id, "VersionStage": stage}
    if version_id:
        kwargs["VersionId"] = version_id
    with aws_errors(f"read secret {secret_id} at {stage}"):
        response = client.get_secret_value(**kwargs)
    found = str(response["VersionId"])
    raw = response.get("SecretString")
    if raw is None:
        raise ConfigurationError(f"secret {secret_id} at {stage} has no SecretString")
    try:
        data = json.loads(raw)
    except ValueError:
        # ``from None``: a JSONDecodeError keeps the whole document (the password) in ``.doc``.
        raise ConfigurationError(f"secret {secret_id} at {stage} is not JSON") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"secret {secret_id} at {stage} is not a JSON object")
    data["password"] = SecretStr(str(data.get("password") or ""))
    return DbCredential.parse(data, found, f"secret {secret_id} at {stage}")


@task(name="create pending credential", **retry.NETWORK)
def create_pending(
    credentials: AwsCredentials, secret_id: str, token: str, current: DbCredential, username: str
) -> str:
    """Store a new random password for ``username`` as AWSPENDING, version id ``token``.

    Idempotent: when the version already exists (a retry after a lost response) nothing is
    written. A stray AWSPENDING of another rotation loses the label to this version.
    """
    if token in version_stages(credentials, secret_id):
        return token
    pending = new_credential(current, username, token)
    client = secrets_client(credentials)
    with aws_errors(f"store the pending version of {secret_id}"):
        client.put_secret_value(
            SecretId=secret_id,
            ClientRequestToken=token,
            SecretString=pending.secret_string(),
            VersionStages=[PENDING],
        )
    return token


def _single_attempt_client(credentials: AwsCredentials) -> Any:
    """A Secrets Manager client that sends each request once (botocore retries off), so a
    connect error proves the request was never sent and a lost answer is never resent."""
    once = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    config = client_params(credentials).get("config")
    return new_client(credentials, "secretsmanager", config=config.merge(once) if config else once)


def _labels_or_none(credentials: AwsCredentials, secret_id: str) -> Labels | None:
    try:
        return Labels.of(version_stages(credentials, secret_id))
    except OpsError:
        return None


@task(name="finish rotation", **retry.NETWORK)
def finish(credentials: AwsCredentials, secret_id: str, token: str) -> dict[str, str]:
    """Move AWSCURRENT to ``token`` (the old version becomes AWSPREVIOUS); drop AWSPENDING.

    Label moves are sent once (no botocore retries). A connect error means nothing was sent;
    any other failure may hide a change that took effect, so the labels are read back before
    deciding. Failures say what happened to AWSCURRENT: :class:`FinishNotApplied` (it did not
    move; the only failure retried), :class:`FinishOutcomeUnknown` (the labels could not be
    read back) or :class:`FinishIncomplete` (it moved; AWSPENDING is still attached).
    """
    client = _single_attempt_client(credentials)
    action = f"move AWSCURRENT of {secret_id} to {token}"
    try:
        labels = Labels.of(version_stages(credentials, secret_id))
    except TransientError as exc:
        raise FinishNotApplied(f"{action}: {exc.message}", hint=exc.hint) from exc
    mine = labels.labels_of(token)
    if mine is None:
        raise NotFoundError(f"secret {secret_id} has no version {token} to make current")
    previous = (labels.previous if CURRENT in mine else labels.current) or ""
    if CURRENT not in mine:
        try:
            with aws_errors(action):
                client.update_secret_version_stage(
                    SecretId=secret_id,
                    VersionStage=CURRENT,
                    MoveToVersionId=token,
                    RemoveFromVersionId=previous,
                )
        except OpsError as exc:
            cause = exc.__cause__
            if isinstance(cause, EndpointConnectionError | ConnectTimeoutError):
                raise FinishNotApplied(exc.message, hint=exc.hint) from exc
            after = _labels_or_none(credentials, secret_id)
            if after is None:
                raise FinishOutcomeUnknown(
                    f"{exc.message}; the labels could not be read back",
                    hint="rerun the rotation: it reads the labels before acting",
                ) from exc
            if after.current != token:
                raise (FinishNotApplied(exc.message) if exc.transient else exc) from exc
    if PENDING in mine:
        try:
            with aws_errors(f"remove AWSPENDING from {token}"):
                client.update_secret_version_stage(
                    SecretId=secret_id, VersionStage=PENDING, RemoveFromVersionId=token
                )
        except OpsError as exc:
            after = _labels_or_none(credentials, secret_id)
            if after is None or after.pending == token:
                raise FinishIncomplete(
                    f"AWSCURRENT of {secret_id} is {token}, but AWSPENDING may still be on it: "
                    f"{exc.message}",
                    hint="rerun the rotation to remove the label",
                ) from exc
    return {"current": token, "previous": previous}


# --- PostgreSQL ----------------------------------------------------------------------------


def scram_matches(verifier: str, password: str) -> bool | None:
    """Whether ``password`` produces the stored SCRAM-SHA-256 ``verifier`` (None: can't tell).

    The verifier is ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802).
    Non-ASCII passwords would need SASLprep first, so they answer None.
    """
    if not password.isascii():
        return None
    try:
        scheme, rest = verifier.split("$", 1)
        params, keys = rest.split("$", 1)
        iterations, salt_b64 = params.split(":", 1)
        stored_b64, server_b64 = keys.split(":", 1)
    except ValueError:
        return False
    if scheme != "SCRAM-SHA-256":
        return False
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt_b64), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hmac.compare_digest(
        hashlib.sha256(client_key).digest(), base64.b64decode(stored_b64)
    ) and hmac.compare_digest(server_key, base64.b64decode(server_b64))


@task(name="is the pending password set", **retry.NETWORK)
def password_is_set(admin: PostgresTarget, cred: DbCredential) -> bool:
    """Whether the role's stored verifier matches the credential (falls back to a login)."""
    with connect(admin, database=cred.dbname) as conn:
        try:
            row = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (cred.username,)
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            row = None  # not a superuser: fall back to a login attempt
        else:
            if row is None:
                raise NotFoundError(f"role {cred.username} does not exist in {admin.describe()}")
    if row is not None:
        verdict = scram_matches(str(row[0] or ""), cred.password.get_secret_value())
        if verdict is not None:
            return verdict
    try:
        _login(cred)
    except (AuthenticationError, VerificationFailed):
        return False
    return True


@task(name="set password in PostgreSQL", **retry.NETWORK)
def set_password(admin: PostgresTarget, cred: DbCredential) -> str:
    """Give ``cred.username`` the credential's password (a SCRAM verifier, hashed here)."""
    with connect(admin, database=cred.dbname) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (cred.username,)).fetchone():
            verifier = conn.pgconn.encrypt_password(
                cred.password.get_secret_value().encode(),
                cred.username.encode(),
                b"scram-sha-256",
            ).decode()
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(cred.username), sql.Literal(verifier)
                )
            )
            return cred.username
    raise NotFoundError(
        f"role {cred.username} does not exist in {admin.describe()}",
        hint="create the role (alternating users: the flow creates <user>_clone)",
    )


def _login(cred: DbCredential) -> dict[str, Any]:
    target = cred.target()
    if cred.host.startswith("/"):
        raise ConfigurationError(f"{cred.describe()}: the login test must use TCP, not a socket")
    conninfo = make_conninfo(target.conninfo(), require_auth="scram-sha-256")
    action = f"log in as {cred.describe()}"
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT session_user, current_database(), inet_server_addr() IS NOT NULL"
            ).fetchone()
            used_password = bool(conn.pgconn.used_password)
    except psycopg.Error as exc:
        # Checked on the raw text: ``translate`` classifies after scrubbing, which masks the
        # words "password authentication" and turns a refused password into a transient error.
        if "password authentication failed" in str(exc):
            raise AuthenticationError(
                f"{action}: PostgreSQL refused the password",
                hint="the credential is not the role's password",
            ) from exc
        raise translate(exc, target, action) from exc
    assert row is not None
    if row[0] != cred.username or not row[2] or not used_password:
        raise VerificationFailed(
            f"login as {cred.describe()} did not authenticate that role by password over TCP"
        )
    return {"role": row[0], "database": row[1], "auth": "scram-sha-256", "tcp": True}


@task(name="test login", **retry.NETWORK)
def test_login(cred: DbCredential) -> dict[str, Any]:
    """Log in over TCP with SCRAM-SHA-256 (libpq ``require_auth``) and check the session role."""
    return _login(cred)
