"""The one place ``httpx`` errors are translated (used by probes, metrics and webhooks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx

from opsflows.errors import ServiceUnavailable, scrub


@contextlib.contextmanager
def http_errors(action: str, url: str) -> Iterator[None]:
    """Translate transport errors (refused, reset, timeout) into ``ServiceUnavailable``."""
    try:
        yield
    except httpx.TransportError as exc:
        raise ServiceUnavailable(
            f"{action}: cannot reach {url}: {type(exc).__name__} {scrub(str(exc))}",
            hint="is the service up and the URL in the block right?",
        ) from exc
