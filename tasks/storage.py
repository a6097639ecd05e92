"""S3 steps. ``botocore`` errors are translated here, once, into opsflows errors."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)
from prefect import task

from blocks.storage import BackupStore
from opsflows import retry
from opsflows.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    OpsError,
    PermanentError,
    ServiceUnavailable,
    Throttled,
    TransientError,
    scrub,
)

_THROTTLE = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}
_AUTH = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "UnrecognizedClientException",
    "AccessDeniedException",
}
_MISSING = {"NoSuchBucket", "NoSuchKey", "NoSuchUpload", "404", "ResourceNotFoundException"}


def translate_aws(exc: Exception, action: str) -> OpsError:
    """Map a botocore error (S3 or Secrets Manager) to the opsflows tree."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = scrub(str(error.get("Message", "")) or code)
        if code in _THROTTLE or status == 429:
            return Throttled(f"{action}: AWS throttled the request ({code})")
        if code in _AUTH or status == 403:
            return AuthenticationError(
                f"{action}: AWS refused the credentials ({code})",
                hint="check the AwsCredentials block and the IAM policy",
            )
        if code in _MISSING or status == 404:
            return NotFoundError(f"{action}: not found ({code}): {text}")
        if status >= 500 or code in {"InternalError", "ServiceUnavailable"}:
            return ServiceUnavailable(f"{action}: AWS answered {status} {code}")
        if code in {"InvalidParameterException", "InvalidRequestException", "ValidationException"}:
            return ConfigurationError(f"{action}: {code}: {text}")
        return PermanentError(f"{action}: AWS error {code}: {text}")
    if isinstance(exc, NoCredentialsError):
        return ConfigurationError(
            f"{action}: no AWS credentials", hint="fill the AwsCredentials block"
        )
    if isinstance(exc, EndpointConnectionError | BotoCoreError):
        return ServiceUnavailable(
            f"{action}: cannot reach AWS: {scrub(str(exc))}",
            hint="is the endpoint (AWS_ENDPOINT_URL / aws_client_parameters) reachable?",
        )
    return PermanentError(f"{action}: {scrub(str(exc))}")


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Translate botocore errors raised inside the block."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate_aws(exc, action) from exc


def cleanup_call(call: Callable[[], object], action: str, attempts: int = 4) -> bool:
    """Run a cleanup call (an abort, a delete) that must not be lost to a blip; whether it
    succeeded. Transient errors are retried with backoff (0.5, 1, 2 s); a permanent one
    (denied, gone) ends the attempts. Never raises an AWS error."""
    for attempt in range(attempts):
        try:
            with aws_errors(action):
                call()
            return True
        except TransientError:
            if attempt + 1 < attempts:
                time.sleep(0.5 * 2**attempt)
        except PermanentError:
            return False
    return False


@task(name="check backup bucket", **retry.NETWORK)
def check_bucket(store: BackupStore) -> dict[str, Any]:
    """Confirm the bucket exists and is reachable; count the objects under the prefix."""
    client = store.s3_client()
    with aws_errors(f"reach bucket {store.bucket}"):
        client.head_bucket(Bucket=store.bucket)
        listing = client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix, MaxKeys=1000)
    return {"bucket": store.bucket, "prefix": store.prefix, "objects": listing.get("KeyCount", 0)}
