"""boto3 clients for prefect-aws credentials, built on one botocore loader per process.

Every new boto3 session gets a new botocore loader, which parses the service's model files
again: about 0.08 s of CPU for an S3 client on the benchmark machine, on every run, since
prefect-aws starts a new session per credentials block. Here every session shares
``LOADER``, whose S3 and Secrets Manager models are read when this module is imported. A
served run forks from a process that has imported it (``deployments.warm_start``), so its
first client costs about 15 ms instead of 0.1 s.

Clients are cached per (credentials, service) like prefect-aws does; boto3 clients are
thread-safe, sessions are not, so sessions are only touched under a lock.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import boto3
from botocore.loaders import Loader, create_loader
from prefect_aws import AwsCredentials

#: The models every process of the runbooks needs: read once, at import.
SERVICES = ("s3", "secretsmanager")

LOADER: Loader = create_loader()
_LOCK = threading.Lock()


def share_loader(session: boto3.Session) -> boto3.Session:
    """Make ``session`` read its models through ``LOADER`` (already parsed); the session."""
    core = getattr(session, "_session", None)  # boto3 keeps its botocore session here
    if core is not None:
        core.register_component("data_loader", LOADER)
    return session


def client_params(credentials: AwsCredentials) -> dict[str, Any]:
    """The keyword arguments of ``session.client`` the block sets (endpoint, config, region)."""
    params: dict[str, Any] = credentials.aws_client_parameters.get_params_override()
    if credentials.region_name is not None:
        params["region_name"] = credentials.region_name
    return params


def new_client(credentials: AwsCredentials, service: str, **overrides: Any) -> Any:
    """A new, uncached client of ``service``: the block's parameters, then ``overrides``."""
    with _LOCK:
        session: Any = share_loader(credentials.get_boto3_session())  # any service name
        return session.client(service_name=service, **{**client_params(credentials), **overrides})


@lru_cache(maxsize=16)
def aws_client(credentials: AwsCredentials, service: str) -> Any:
    """A boto3 client of ``service`` for ``credentials`` (cached per both)."""
    return new_client(credentials, service)


def _warm() -> None:
    """Parse the models of ``SERVICES`` into ``LOADER`` (no network call is made).

    Only a head start: when it cannot be made (an ``AWS_PROFILE`` naming no profile, say),
    the first client parses them instead, and reports what is wrong there.
    """
    try:
        session: Any = share_loader(
            boto3.Session(aws_access_key_id="-", aws_secret_access_key="-", region_name="us-east-1")
        )
        for service in SERVICES:
            session.client(service, endpoint_url="http://127.0.0.1:9")
    except Exception:  # noqa: BLE001, S110 - see above
        pass


_warm()
