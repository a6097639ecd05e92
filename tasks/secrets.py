"""Secrets Manager steps. Secret values stay inside ``SecretStr`` and never reach logs."""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect_aws import AwsCredentials
from pydantic import SecretStr

from blocks.aws_clients import aws_client
from opsflows import retry
from opsflows.errors import ConfigurationError, VerificationFailed
from tasks.storage import aws_errors


def secrets_client(credentials: AwsCredentials) -> Any:
    return aws_client(credentials, "secretsmanager")


def read_secret(
    credentials: AwsCredentials, secret_id: str, stage: str = "AWSCURRENT"
) -> SecretStr:
    """The secret string at ``stage`` (always an explicit ``VersionStage``)."""
    client = secrets_client(credentials)
    with aws_errors(f"read secret {secret_id} at {stage}"):
        response = client.get_secret_value(SecretId=secret_id, VersionStage=stage)
    return SecretStr(str(response["SecretString"]))


def read_secret_json(
    credentials: AwsCredentials, secret_id: str, stage: str = "AWSCURRENT"
) -> dict[str, Any]:
    """A JSON secret's fields; the ``password`` field comes back as ``SecretStr``."""
    raw = read_secret(credentials, secret_id, stage).get_secret_value()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigurationError(
            f"secret {secret_id} at {stage} is not JSON", hint="store a JSON object"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"secret {secret_id} at {stage} is not a JSON object")
    if "password" in data:
        data["password"] = SecretStr(str(data["password"]))
    return data


def version_stages(credentials: AwsCredentials, secret_id: str) -> dict[str, list[str]]:
    """``{version_id: [labels]}`` for every version of the secret."""
    client = secrets_client(credentials)
    with aws_errors(f"describe secret {secret_id}"):
        response = client.describe_secret(SecretId=secret_id)
    return {k: list(v) for k, v in response.get("VersionIdsToStages", {}).items()}


@task(name="check secret", **retry.NETWORK)
def check_secret(credentials: AwsCredentials, secret_id: str) -> dict[str, Any]:
    """Confirm the secret exists, has an AWSCURRENT version, and that version is readable."""
    stages = version_stages(credentials, secret_id)
    current = [v for v, labels in stages.items() if "AWSCURRENT" in labels]
    if not current:
        raise VerificationFailed(f"secret {secret_id} has no AWSCURRENT version")
    read_secret(credentials, secret_id, "AWSCURRENT")
    return {"secret": secret_id, "versions": len(stages), "current_version": current[0]}
