"""Kubernetes API errors and the ``Status`` bodies that carry them.

Every failure the simulator reports is an ``ApiError``; the HTTP layer turns it into the
``{"kind": "Status", "status": "Failure", "reason": ..., "code": ...}`` body a real apiserver
sends, so the official client raises ``ApiException`` with the right ``.status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devstack.kubesim.kinds import ResourceType

REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(
    code: int,
    message: str,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a ``v1.Status`` failure body."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    """A request the apiserver refuses, with its HTTP code and ``Status`` reason."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``Status`` body for this error."""
        return status_body(self.code, self.message, reason=self.reason, details=self.details)


def _details(rtype: ResourceType, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": rtype.plural}
    if rtype.group:
        details["group"] = rtype.group
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    """``<resource> "<name>" not found`` (404)."""
    return ApiError(404, f'{rtype.qualified} "{name}" not found', details=_details(rtype, name))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    """``<resource> "<name>" already exists`` (409 AlreadyExists)."""
    return ApiError(
        409,
        f'{rtype.qualified} "{name}" already exists',
        reason="AlreadyExists",
        details=_details(rtype, name),
    )


def conflict(rtype: ResourceType, name: str, why: str | None = None) -> ApiError:
    """The optimistic-concurrency failure (409 Conflict)."""
    why = why or (
        "the object has been modified; "
        "please apply your changes to the latest version and try again"
    )
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}',
        details=_details(rtype, name),
    )


def invalid(rtype: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """A validation failure (422 Invalid); ``causes`` are ``(field, message)`` pairs."""
    texts = [f"{field}: {message}" for field, message in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    details = _details(rtype, name)
    details["causes"] = [
        {"reason": "FieldValueInvalid", "message": message, "field": field}
        for field, message in causes
    ]
    return ApiError(
        422, f'{rtype.kind}{_group_suffix(rtype)} "{name}" is invalid: {summary}', details=details
    )


def bad_request(message: str) -> ApiError:
    """A request the server cannot decode (400 BadRequest)."""
    return ApiError(400, message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    """405 MethodNotAllowed."""
    return ApiError(405, message)


def _group_suffix(rtype: ResourceType) -> str:
    return f".{rtype.group}" if rtype.group else ""
