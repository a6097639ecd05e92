"""Pure decisions of the CI webhook: is a request authentic, fresh and mapped to a runbook?

Everything here works on bytes, mappings and frozen dataclasses (no Prefect, no HTTP server),
so the rules are unit-tested without services. ``deployments/webhook.py`` adds the I/O: the
secret block, the replay store and the Prefect client.

Two request forms are accepted::

    form      event header       delivery header      signature header       signed bytes
    github    X-GitHub-Event     X-GitHub-Delivery    X-Hub-Signature-256    body
    opsflows  X-Opsflows-Event   X-Opsflows-Delivery  X-Opsflows-Signature   "<ts>." + body
                                                      (+ X-Opsflows-Timestamp: unix seconds)

Signatures are ``sha256=<hex HMAC-SHA256>``. The opsflows form signs its timestamp with the
body so a captured request cannot be refreshed; the github form (GitHub's own scheme, no
timestamp header) is judged fresh by the event time inside the signed payload.

Outcomes, checked in this order (the first failure wins, nothing is started):

    400  body over the size limit; event/delivery/timestamp header missing or malformed
    401  signature missing or wrong
    400  body is not a JSON object
    404  no route for this (form, event) at all
    400  a github payload without an event time
    401  event older than the limit (or as far in the future)
    404  no route matches the payload, or the generic form names a deployment not allowed
    400  the route needs a payload field the event lacks, or the caller sets a parameter
         the route does not allow
    409  delivery id already seen (decided by the replay store, not here)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opsflows.errors import ConfigurationError, PermanentError

MAX_BODY_BYTES = 256 * 1024
MAX_AGE_SECONDS = 300.0
REPLAY_TTL_SECONDS = 86400.0
GITHUB = "github"
OPSFLOWS = "opsflows"
#: GitHub sends ``ping`` when a webhook is created: authenticated, answered, never routed.
PING = "ping"
_HEADERS = {
    GITHUB: ("x-github-event", "x-github-delivery", "x-hub-signature-256"),
    OPSFLOWS: ("x-opsflows-event", "x-opsflows-delivery", "x-opsflows-signature"),
}
_TIMESTAMP_HEADER = "x-opsflows-timestamp"
#: Where a GitHub payload says when its event happened (first present path wins).
GITHUB_EVENT_TIME = {
    "push": ("repository.pushed_at", "head_commit.timestamp"),
    "workflow_run": ("workflow_run.updated_at", "workflow_run.created_at"),
    "deployment": ("deployment.updated_at", "deployment.created_at"),
    "ping": ("hook.updated_at", "hook.created_at"),
}
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_MISSING = object()


class Rejected(PermanentError):
    """The request is refused with an HTTP status and a reason safe to send back."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


@dataclass(frozen=True)
class Delivery:
    """What the headers of one request say (the signature itself is not kept)."""

    source: str
    event: str
    delivery_id: str
    timestamp: str | None = None


@dataclass(frozen=True)
class Route:
    """One row of the routing table: which event starts which deployment, with what."""

    name: str
    source: str
    event: str
    match: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    deployment: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: Generic form only: deployment name -> parameter names the caller may set.
    allow: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteTable:
    """The whole routing table with the limits the receiver enforces."""

    routes: tuple[Route, ...]
    max_body_bytes: int = MAX_BODY_BYTES
    max_age_seconds: float = MAX_AGE_SECONDS
    replay_ttl_seconds: float = REPLAY_TTL_SECONDS


@dataclass(frozen=True)
class RunRequest:
    """The decision: start ``deployment`` ("flow/deployment") with ``parameters``."""

    route: str
    deployment: str
    parameters: Mapping[str, Any]
    source: str
    event: str
    delivery_id: str

    @property
    def idempotency_key(self) -> str:
        """The same delivery can never start two runs, whatever the replay store says."""
        return f"{self.source}:{self.delivery_id}"


# --- signatures and headers -------------------------------------------------------------


def signed_bytes(body: bytes, timestamp: str | None) -> bytes:
    """The bytes a sender signs: the raw body, prefixed by ``"<ts>."`` in the opsflows form."""
    return body if timestamp is None else timestamp.encode("ascii") + b"." + body


def sign(secret: bytes, body: bytes, timestamp: str | None = None) -> str:
    """The signature header value (``sha256=<hex>``) a sender puts on ``body``."""
    digest = hmac.new(secret, signed_bytes(body, timestamp), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_valid(secret: bytes, body: bytes, header: str | None, timestamp: str | None) -> bool:
    """Constant-time check of a ``sha256=<hex>`` header against the expected signature."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = sign(secret, body, timestamp)
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


def read_delivery(headers: Mapping[str, str]) -> tuple[Delivery, str | None]:
    """The delivery named by the headers and its signature header; 400 when incomplete."""
    lower = {k.lower(): v for k, v in headers.items()}
    found = [source for source, names in _HEADERS.items() if names[0] in lower]
    if len(found) != 1:
        raise Rejected(400, "give exactly one event header: X-GitHub-Event or X-Opsflows-Event")
    source = found[0]
    event_h, delivery_h, signature_h = _HEADERS[source]
    event = lower[event_h].strip()
    delivery_id = lower.get(delivery_h, "").strip()
    if not event:
        raise Rejected(400, f"empty {event_h} header")
    if not _DELIVERY_ID.match(delivery_id):
        raise Rejected(400, f"missing or malformed {delivery_h} header")
    timestamp = None
    if source == OPSFLOWS:
        timestamp = lower.get(_TIMESTAMP_HEADER, "").strip()
        if not timestamp.isdigit():
            raise Rejected(400, f"missing or malformed {_TIMESTAMP_HEADER} header (unix seconds)")
    return Delivery(source, event, delivery_id, timestamp), lower.get(signature_h)


def parse_payload(body: bytes) -> dict[str, Any]:
    """The JSON object in the body; 400 for anything else."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected(400, f"body is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(payload, dict):
        raise Rejected(400, "body must be a JSON object")
    return payload


# --- freshness --------------------------------------------------------------------------


def _as_epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def event_time(delivery: Delivery, payload: Mapping[str, Any]) -> float:
    """When the event happened, from the signed timestamp or the signed payload; 400 if unknown."""
    if delivery.timestamp is not None:
        return float(delivery.timestamp)
    for path in GITHUB_EVENT_TIME.get(delivery.event, ()):
        found = _as_epoch(lookup(payload, path))
        if found is not None:
            return found
    raise Rejected(400, f"cannot tell when the {delivery.event!r} event happened")


def check_fresh(occurred: float, now: float, max_age: float = MAX_AGE_SECONDS) -> None:
    """401 when the event is older than ``max_age`` or as far in the future (clock skew)."""
    age = now - occurred
    if age > max_age:
        raise Rejected(401, f"stale request: {age:.0f}s old, limit {max_age:.0f}s")
    if age < -max_age:
        raise Rejected(401, f"timestamp {-age:.0f}s in the future, limit {max_age:.0f}s")


# --- routing ----------------------------------------------------------------------------


def lookup(payload: Any, path: str) -> Any:
    """The value at a dotted path, or ``None`` when any step is missing."""
    node = payload
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def render(template: Any, payload: Mapping[str, Any], route: str) -> Any:
    """Fill ``{{ dotted.path }}`` placeholders from the payload; 400 when a value is missing.

    A template that is exactly one placeholder keeps the value's type; placeholders inside
    text become text. Mappings and lists are rendered recursively.
    """
    if isinstance(template, Mapping):
        return {k: render(v, payload, route) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, payload, route) for v in template]
    if not isinstance(template, str):
        return template

    def value(path: str) -> Any:
        found = lookup(payload, path)
        if found is None or found == "":
            raise Rejected(400, f"route {route!r} needs {path!r} in the payload")
        return found

    whole = _PLACEHOLDER.fullmatch(template.strip())
    if whole:
        return value(whole.group(1))
    return _PLACEHOLDER.sub(lambda m: str(value(m.group(1))), template)


def _matches(route: Route, delivery: Delivery, payload: Mapping[str, Any]) -> bool:
    if route.source != delivery.source or route.event != delivery.event:
        return False
    return all(lookup(payload, path) in wanted for path, wanted in route.match)


def _generic_request(route: Route, delivery: Delivery, payload: Mapping[str, Any]) -> RunRequest:
    deployment = payload.get("deployment")
    parameters = payload.get("parameters", {})
    if not isinstance(deployment, str) or not isinstance(parameters, dict):
        raise Rejected(400, 'generic form is {"deployment": "flow/name", "parameters": {...}}')
    if deployment not in route.allow:
        raise Rejected(404, f"deployment {deployment!r} is not allowed by route {route.name!r}")
    allowed = route.allow[deployment]
    refused = sorted(set(parameters) - set(allowed))
    if refused:
        raise Rejected(
            400, f"parameters {refused} are not allowed for {deployment!r} by route {route.name!r}"
        )
    merged = {**render(dict(route.parameters), payload, route.name), **parameters}
    return RunRequest(
        route.name, deployment, merged, delivery.source, delivery.event, delivery.delivery_id
    )


def route_event(table: RouteTable, delivery: Delivery, payload: Mapping[str, Any]) -> RunRequest:
    """The run the first matching route asks for; 404 when no route matches."""
    for route in table.routes:
        if not _matches(route, delivery, payload):
            continue
        if route.allow:
            return _generic_request(route, delivery, payload)
        assert route.deployment is not None  # load_table guarantees one of the two
        return RunRequest(
            route.name,
            route.deployment,
            render(dict(route.parameters), payload, route.name),
            delivery.source,
            delivery.event,
            delivery.delivery_id,
        )
    raise Rejected(404, f"no route for {delivery.source} event {delivery.event!r}")


def decide(
    table: RouteTable,
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
) -> RunRequest | None:
    """Every check but the replay store, in order; the run to start, or None for a ping."""
    if len(body) > table.max_body_bytes:
        raise Rejected(400, f"payload larger than {table.max_body_bytes} bytes")
    delivery, signature = read_delivery(headers)
    if not signature_valid(secret, body, signature, delivery.timestamp):
        raise Rejected(401, "missing or invalid signature")
    payload = parse_payload(body)
    if delivery.source == GITHUB and delivery.event == PING:
        return None
    if not any(r.source == delivery.source and r.event == delivery.event for r in table.routes):
        raise Rejected(404, f"no route for {delivery.source} event {delivery.event!r}")
    check_fresh(event_time(delivery, payload), now, table.max_age_seconds)
    return route_event(table, delivery, payload)


# --- the table's own validation ---------------------------------------------------------


def _route(raw: Any, index: int) -> Route:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"routes[{index}] must be a mapping")
    name = str(raw.get("name") or f"routes[{index}]")
    source, event = raw.get("source"), raw.get("event")
    if source not in (GITHUB, OPSFLOWS):
        raise ConfigurationError(f"route {name!r}: source must be {GITHUB!r} or {OPSFLOWS!r}")
    if not isinstance(event, str) or not event:
        raise ConfigurationError(f"route {name!r}: event is required")
    deployment, allow_raw = raw.get("deployment"), raw.get("allow") or {}
    if bool(deployment) == bool(allow_raw):
        raise ConfigurationError(f"route {name!r}: give exactly one of 'deployment' or 'allow'")
    if allow_raw and source != OPSFLOWS:
        raise ConfigurationError(f"route {name!r}: 'allow' is for the generic (opsflows) form only")
    for target in [deployment] if deployment else list(allow_raw):
        if not isinstance(target, str) or target.count("/") != 1:
            raise ConfigurationError(
                f"route {name!r}: deployment {target!r} is not 'flow/deployment'"
            )
    if not isinstance(allow_raw, Mapping):
        raise ConfigurationError(f"route {name!r}: allow maps deployment names to parameter lists")
    allow = {str(k): tuple(str(p) for p in (v or ())) for k, v in allow_raw.items()}
    match_raw = raw.get("match") or {}
    parameters = raw.get("parameters") or {}
    if not isinstance(match_raw, Mapping) or not isinstance(parameters, Mapping):
        raise ConfigurationError(f"route {name!r}: match and parameters must be mappings")
    match = tuple(
        (str(path), tuple(v) if isinstance(v, list) else (v,)) for path, v in match_raw.items()
    )
    return Route(name, source, event, match, deployment, dict(parameters), allow)


def load_table(data: Mapping[str, Any]) -> RouteTable:
    """Validate a parsed routing table; ``ConfigurationError`` names the first bad entry."""
    routes = data.get("routes")
    if not isinstance(routes, list) or not routes:
        raise ConfigurationError("the routing table needs a non-empty 'routes' list")
    table = RouteTable(
        routes=tuple(_route(raw, i) for i, raw in enumerate(routes)),
        max_body_bytes=int(data.get("max_body_bytes", MAX_BODY_BYTES)),
        max_age_seconds=float(data.get("max_age_seconds", MAX_AGE_SECONDS)),
        replay_ttl_seconds=float(data.get("replay_ttl_seconds", REPLAY_TTL_SECONDS)),
    )
    if table.replay_ttl_seconds < 2 * table.max_age_seconds:
        raise ConfigurationError("replay_ttl_seconds must cover at least twice max_age_seconds")
    names = [r.name for r in table.routes]
    if len(set(names)) != len(names):
        raise ConfigurationError("route names must be unique")
    return table
