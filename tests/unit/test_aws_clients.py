"""boto3 clients from prefect-aws credentials on the shared, pre-parsed botocore loader."""

from __future__ import annotations

from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters

from blocks.aws_clients import LOADER, SERVICES, aws_client
from blocks.storage import BackupStore


def _credentials(endpoint: str, key: str = "AKIAEXAMPLE") -> AwsCredentials:
    return AwsCredentials(
        aws_access_key_id=key,
        aws_secret_access_key="not-a-secret",
        region_name="eu-west-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
    )


def test_the_models_are_parsed_at_import() -> None:
    """What a served run inherits from the preloaded process: no model file read again."""
    cache = LOADER._cache  # type: ignore[attr-defined]
    cached = {key[1] for key in cache if key[0] == "load_service_model"}
    assert set(SERVICES) <= cached


def test_a_client_reads_through_the_shared_loader_with_the_blocks_settings() -> None:
    client = aws_client(_credentials("http://127.0.0.1:9001"), "s3")
    assert client.meta.endpoint_url == "http://127.0.0.1:9001"
    assert client.meta.region_name == "eu-west-1"
    assert client._loader is LOADER  # type: ignore[attr-defined]


def test_clients_are_cached_per_credentials_and_service() -> None:
    one = aws_client(_credentials("http://127.0.0.1:9002"), "s3")
    assert aws_client(_credentials("http://127.0.0.1:9002"), "s3") is one
    assert aws_client(_credentials("http://127.0.0.1:9003"), "s3") is not one
    assert aws_client(_credentials("http://127.0.0.1:9002", key="AKIAOTHER"), "s3") is not one
    secrets = aws_client(_credentials("http://127.0.0.1:9002"), "secretsmanager")
    assert secrets.meta.service_model.service_name == "secretsmanager"


def test_the_backup_store_uses_it() -> None:
    store = BackupStore(bucket="b", aws_credentials=_credentials("http://127.0.0.1:9004"))
    assert store.s3_client() is aws_client(store.aws_credentials, "s3")


def test_a_broken_aws_profile_does_not_break_the_import() -> None:
    """Warming the models is a head start only: the runbooks still import (and the first
    client reports the profile) when ``AWS_PROFILE`` names no profile."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", "import blocks.storage"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "AWS_PROFILE": "no-such-profile"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
