"""Pure decisions of the CI webhook: is a request authentic, fresh and mapped to a runbook?

Everything here works on bytes, mappings and frozen dataclasses (no Prefect, no HTTP server),
so the rules are unit-tested without services. ``deployments/webhook.py`` adds the I/O: the
secret block, the replay store and the Prefect client.

Two request forms are accepted::

    form      event header       delivery header      signature header       signed bytes
    github    X-GitHub-Event     X-GitHub-Delivery    X-Hub-Signature-256    body
    opsflows  X-Opsflows-Event   X-Opsflows-Delivery  X-Opsflows-Signature   "<ts>.<delivery>."
                                                      (+ X-Opsflows-Timestamp:  + body
                                                         unix seconds)

Signatures are ``sha256=<hex HMAC-SHA256>``. The opsflows form signs its timestamp and its
delivery id with the body, so a captured request can be neither refreshed nor renamed; the
github form (GitHub's own scheme: the delivery header is not signed) is judged fresh by the
event time inside the signed payload, and the replay store remembers a SHA-256 of the signed
bytes as well as the delivery id, so the same signed body under a new delivery id is a replay.
The body must be JSON: GitHub's default content type (form-encoded) is refused with the
setting to change. What a request may choose (never the promotion policy or a path on the
worker; only listed image repositories) is ``decisions.webhook_parameters``.

Outcomes, checked in this order (the first failure wins, nothing is started):

    413  body over the size limit (also when Content-Length says so, before reading it)
    415  Content-Type set and not application/json (GitHub: "Content type: application/json")
    408  the body did not arrive within the body timeout (decided by the receiver, not here)
    400  event/delivery/timestamp header missing or malformed
    401  signature missing or wrong
    400  body is not a JSON object
    404  no route for this (form, event) at all
    400  a github payload without an event time
    401  event older than the limit (or as far in the future)
    404  no route matches the payload, or the generic form names a deployment not allowed
    403  the request sets the promotion policy, migrations_dir or repository (whatever the
         routes file allows)
    400  the route needs a payload field the event lacks, or the caller sets a parameter
         the route does not allow, or a malformed git_ref, or migrations without git_ref
    403  an image whose registry/repository the route does not list, or not pinned
    409  delivery id, or the same signed bytes, already seen (decided by the replay store)
    503  (the receiver) connection limit reached, secret block missing, Prefect API down
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from decisions.webhook_parameters import PLACEHOLDER, check_run, refuse_never_from_ci, templated
from decisions.webhook_parameters import Rejected as Rejected
from decisions.webhook_table import GITHUB, OPSFLOWS, Route
from decisions.webhook_table import MAX_AGE_SECONDS as MAX_AGE_SECONDS
from decisions.webhook_table import MAX_BODY_BYTES as MAX_BODY_BYTES
from decisions.webhook_table import REPLAY_TTL_SECONDS as REPLAY_TTL_SECONDS
from decisions.webhook_table import RouteTable as RouteTable
from decisions.webhook_table import load_table as load_table

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
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Delivery:
    """What the headers of one request say (the signature itself is not kept)."""

    source: str
    event: str
    delivery_id: str
    timestamp: str | None = None


@dataclass(frozen=True)
class RunRequest:
    """The decision: start ``deployment`` ("flow/deployment") with ``parameters``."""

    route: str
    deployment: str
    parameters: Mapping[str, Any]
    source: str
    event: str
    delivery_id: str
    #: SHA-256 (hex) of the signed bytes: the same signed request under another delivery id.
    signed_digest: str = ""

    @property
    def idempotency_key(self) -> str:
        """The same delivery can never start two runs, whatever the replay store says."""
        return f"{self.source}:{self.delivery_id}"

    @property
    def replay_keys(self) -> tuple[str, ...]:
        """What the replay store remembers: the delivery id, and the signed bytes' digest."""
        digest = (f"signed:{self.signed_digest}",) if self.signed_digest else ()
        return (self.idempotency_key, *digest)


# --- signatures and headers -------------------------------------------------------------


def signed_bytes(body: bytes, timestamp: str | None = None, delivery: str | None = None) -> bytes:
    """The bytes a sender signs: the raw body (github form), or ``"<ts>.<delivery>." + body``.

    Raises:
        ValueError: only one of ``timestamp`` and ``delivery`` is given (the opsflows form
            signs both).
    """
    if timestamp is None and delivery is None:
        return body
    if timestamp is None or delivery is None:
        raise ValueError("the opsflows form signs both the timestamp and the delivery id")
    return f"{timestamp}.{delivery}.".encode("ascii") + body


def sign(
    secret: bytes, body: bytes, timestamp: str | None = None, delivery: str | None = None
) -> str:
    """The signature header value (``sha256=<hex>``) a sender puts on ``body``.

    GitHub form: ``sign(secret, body)``; opsflows form: ``sign(secret, body, ts, delivery)``.
    """
    digest = hmac.new(secret, signed_bytes(body, timestamp, delivery), hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def signature_valid(
    secret: bytes,
    body: bytes,
    header: str | None,
    timestamp: str | None,
    delivery: str | None = None,
) -> bool:
    """Constant-time check of a ``sha256=<hex>`` header against the expected signature."""
    return _signature_matches(secret, signed_bytes(body, timestamp, delivery), header)


def _signature_matches(secret: bytes, signed: bytes, header: str | None) -> bool:
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


def signed_by(delivery: Delivery, body: bytes) -> bytes:
    """The bytes the sender of ``delivery`` signed."""
    if delivery.timestamp is None:
        return body
    return signed_bytes(body, delivery.timestamp, delivery.delivery_id)


def check_content_type(headers: Mapping[str, str]) -> None:
    """415 unless the body is declared JSON (or not declared at all)."""
    lower = {k.lower(): v for k, v in headers.items()}
    declared = lower.get("content-type", "").split(";", 1)[0].strip().lower()
    if declared and declared != JSON_TYPE:
        raise Rejected(
            415,
            f"the body must be JSON (Content-Type: {JSON_TYPE}), not {declared[:60]!r}; for a "
            "GitHub webhook set its Content type: application/json (repository Settings -> "
            "Webhooks -> Edit)",
        )


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

    whole = PLACEHOLDER.fullmatch(template.strip())
    if whole:
        return value(whole.group(1))
    return PLACEHOLDER.sub(lambda m: str(value(m.group(1))), template)


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
    refuse_never_from_ci(parameters, route.name)  # 403 even when the allow list names them
    allowed = route.allow[deployment]
    refused = sorted(set(parameters) - set(allowed))
    if refused:
        raise Rejected(
            400, f"parameters {refused} are not allowed for {deployment!r} by route {route.name!r}"
        )
    rendered = render(dict(route.parameters), payload, route.name)
    merged = {**rendered, **route.fixed.get(deployment, {}), **parameters}
    check_run(route.name, merged, [*_chosen_by_templates(route), *parameters], route.images)
    return RunRequest(
        route.name, deployment, merged, delivery.source, delivery.event, delivery.delivery_id
    )


def _chosen_by_templates(route: Route) -> list[str]:
    return [name for name, template in route.parameters.items() if templated(template)]


def route_event(table: RouteTable, delivery: Delivery, payload: Mapping[str, Any]) -> RunRequest:
    """The run the first matching route asks for; 404 when no route matches."""
    for route in table.routes:
        if not _matches(route, delivery, payload):
            continue
        if route.allow:
            return _generic_request(route, delivery, payload)
        assert route.deployment is not None  # load_table guarantees one of the two
        chosen = _chosen_by_templates(route)
        refuse_never_from_ci(chosen, route.name)  # before a missing field could answer 400
        parameters = render(dict(route.parameters), payload, route.name)
        check_run(route.name, parameters, chosen, route.images)
        return RunRequest(
            route.name,
            route.deployment,
            parameters,
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
        raise Rejected(413, f"payload larger than {table.max_body_bytes} bytes")
    check_content_type(headers)
    delivery, signature = read_delivery(headers)
    signed = signed_by(delivery, body)
    if not _signature_matches(secret, signed, signature):
        raise Rejected(401, "missing or invalid signature")
    payload = parse_payload(body)
    if delivery.source == GITHUB and delivery.event == PING:
        return None
    if not any(r.source == delivery.source and r.event == delivery.event for r in table.routes):
        raise Rejected(404, f"no route for {delivery.source} event {delivery.event!r}")
    check_fresh(event_time(delivery, payload), now, table.max_age_seconds)
    run = route_event(table, delivery, payload)
    return replace(run, signed_digest=hashlib.sha256(signed).hexdigest())
