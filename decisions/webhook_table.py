"""The CI webhook's routing table: its rows (``Route``), its limits, and their validation.

Read from YAML by ``deployments/webhook.py`` (``deployments/webhook_routes.yaml`` explains
the fields); ``load_table`` refuses a bad table with a ``ConfigurationError`` that names the
first bad entry, so the receiver never starts with a table it would misread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from decisions.webhook_parameters import IMAGE, allow_entry, images_of, require_images
from opsflows.errors import ConfigurationError

MAX_BODY_BYTES = 256 * 1024
MAX_AGE_SECONDS = 300.0
REPLAY_TTL_SECONDS = 86400.0
GITHUB = "github"
OPSFLOWS = "opsflows"


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
    #: Generic form only: deployment name -> parameters the route fixes for it.
    fixed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The registry/repository names whose images this route may ship.
    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteTable:
    """The whole routing table with the limits the receiver enforces."""

    routes: tuple[Route, ...]
    max_body_bytes: int = MAX_BODY_BYTES
    max_age_seconds: float = MAX_AGE_SECONDS
    replay_ttl_seconds: float = REPLAY_TTL_SECONDS


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
    entries = {str(k): allow_entry(str(k), v, name) for k, v in allow_raw.items()}
    allow = {k: names for k, (names, _) in entries.items()}
    fixed = {k: values for k, (_, values) in entries.items() if values}
    match_raw = raw.get("match") or {}
    parameters = raw.get("parameters") or {}
    if not isinstance(match_raw, Mapping) or not isinstance(parameters, Mapping):
        raise ConfigurationError(f"route {name!r}: match and parameters must be mappings")
    match = tuple(
        (str(path), tuple(v) if isinstance(v, list) else (v,)) for path, v in match_raw.items()
    )
    images = images_of(raw.get("images"), name)
    passes_image = IMAGE in parameters or any(
        IMAGE in names or IMAGE in values for names, values in entries.values()
    )
    require_images(name, passes_image, images)
    return Route(name, source, event, match, deployment, dict(parameters), allow, fixed, images)


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
