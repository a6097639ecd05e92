"""What a signed CI request may choose, whatever the routing table says.

A valid signature proves that the request comes from CI, not that CI may decide everything
about a production change. These rules hold for every route, and ``decisions.webhook``
applies them to every run it decides, after the routing table's own allow lists::

    parameter        from the request (the caller's parameters, or a "{{ path }}" template)
    policy           never: 403. The promotion gate (auto, or a person in the UI) is the
                     deployment's, set where the deployment is defined
    migrations_dir,  never: 403. They are paths on the worker; migrations come from the
    repository       route's fixed folder of the deployment's repository, at ``git_ref``
    git_ref          a branch, tag or commit name: 400 when malformed; a run that gets a
                     ``migrations_dir`` from its route needs one (400 without)
    image            its registry/repository must be listed in the route's ``images`` and it
                     must be pinned (a tag other than ``latest``, or a digest): 403 naming
                     the allowed repositories

Everything here is pure: the values come in, a ``Rejected`` (HTTP status and a reason safe
to send back) or a ``ConfigurationError`` (for the table itself) goes out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from decisions.deploy import parse_image
from opsflows.errors import ConfigurationError, PermanentError

IMAGE = "image"
GIT_REF = "git_ref"
MIGRATIONS_DIR = "migrations_dir"
#: Parameters a request may never set, and why (sent back with the 403).
NEVER_FROM_CI: Mapping[str, str] = {
    "policy": (
        "the promotion policy is never set from CI: a person promotes in the Prefect UI, or "
        "the deployment's own default decides"
    ),
    MIGRATIONS_DIR: (
        "migrations_dir is a path on the worker and is never set from CI: send git_ref, and "
        "the route's migrations folder is read from the repository at that ref"
    ),
    "repository": (
        "repository is a path on the worker and is never set from CI: send git_ref, and "
        "the route's migrations folder is read from the configured repository at that ref"
    ),
}
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
# Branch, tag or commit names only: no revision expressions (~ ^ @{ :), no leading dash
# (it would read as a git option), no "..", no empty path components.
_GIT_REF = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]|/(?=[A-Za-z0-9._-])){0,199}$")
# registry/repository as Docker spells them (lowercase path components, optional port).
_REPOSITORY = re.compile(
    r"^(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*(?::\d+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*$"
)


class Rejected(PermanentError):
    """The request is refused with an HTTP status and a reason safe to send back."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


def templated(template: Any) -> bool:
    """True when the value has a ``{{ path }}`` placeholder: the payload chooses it."""
    if isinstance(template, Mapping):
        return any(templated(v) for v in template.values())
    if isinstance(template, list):
        return any(templated(v) for v in template)
    return isinstance(template, str) and PLACEHOLDER.search(template) is not None


def refuse_never_from_ci(chosen: Iterable[str], route: str) -> None:
    """403 for the first parameter a request may never set."""
    for name in sorted(set(chosen) & set(NEVER_FROM_CI)):
        raise Rejected(403, f"route {route!r}: {NEVER_FROM_CI[name]}")


def check_git_ref(value: Any) -> None:
    """400 unless ``value`` is a plain branch, tag or commit name."""
    if (
        not isinstance(value, str)
        or not _GIT_REF.match(value)
        or ".." in value
        or "/." in value
        or value.endswith((".", ".lock"))
    ):
        raise Rejected(
            400,
            f"git_ref {str(value)[:80]!r} is not a branch, tag or commit name "
            "(letters, digits, '.', '_', '-', '/'; no '..', '~', '^', '@{' or leading '-')",
        )


def check_image(value: Any, allowed: tuple[str, ...], route: str) -> None:
    """403 unless the image is pinned and its registry/repository is one of ``allowed``."""
    listed = ", ".join(allowed) if allowed else "none"
    refusal = Rejected(
        403,
        f"route {route!r} ships only images of {listed}, pinned to a tag or digest "
        f"(e.g. {allowed[0] if allowed else 'registry/repository'}:1.4.2); "
        f"got {str(value)[:120]!r}",
    )
    if not isinstance(value, str):
        raise refusal
    try:
        ref = parse_image(value)
    except ConfigurationError as exc:
        raise refusal from exc
    repository = f"{ref.registry}/{ref.repository}" if ref.registry else ref.repository
    if repository not in allowed:
        raise refusal


def check_run(
    route: str,
    parameters: Mapping[str, Any],
    chosen: Iterable[str],
    images: tuple[str, ...],
) -> None:
    """Every rule above on the parameters a run would start with.

    Args:
        route: The route's name (for the reasons).
        parameters: Everything the run gets from the route (fixed, rendered, the caller's).
        chosen: The names the request chose: the caller's, and rendered templates.
        images: The registry/repository names the route may ship.
    """
    refuse_never_from_ci(chosen, route)
    if GIT_REF in parameters:
        check_git_ref(parameters[GIT_REF])
    elif MIGRATIONS_DIR in parameters:
        raise Rejected(
            400,
            f"route {route!r}: migrations from CI are read from the repository at a git ref; "
            "send git_ref (a branch, tag or commit)",
        )
    if IMAGE in parameters:
        check_image(parameters[IMAGE], images, route)


# --- the table's own checks ---------------------------------------------------------------


def images_of(raw: Any, route: str) -> tuple[str, ...]:
    """The route's ``images`` list, validated (registry/repository, no tag)."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise ConfigurationError(f"route {route!r}: images is a list of registry/repository")
    for image in raw:
        if not _REPOSITORY.match(image) or "/" not in image:
            raise ConfigurationError(
                f"route {route!r}: image {image!r} is not a registry/repository "
                "(e.g. registry.local/web-app, without a tag)"
            )
    return tuple(raw)


def allow_entry(deployment: str, raw: Any, route: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One ``allow`` entry: the parameter names the caller may set, and fixed parameters.

    Either a list of names, or ``{"parameters": [names], "fixed": {name: value}}``.
    """
    if raw is None or isinstance(raw, list):
        return tuple(str(p) for p in raw or ()), {}
    if not isinstance(raw, Mapping) or set(raw) - {"parameters", "fixed"}:
        raise ConfigurationError(
            f"route {route!r}: allow[{deployment!r}] is a list of parameter names, or "
            "{parameters: [names], fixed: {name: value}}"
        )
    names, fixed = raw.get("parameters") or [], raw.get("fixed") or {}
    if not isinstance(names, list) or not isinstance(fixed, Mapping):
        raise ConfigurationError(
            f"route {route!r}: allow[{deployment!r}] needs parameters as a list, fixed as a mapping"
        )
    both = sorted(set(map(str, names)) & set(map(str, fixed)))
    if both:
        raise ConfigurationError(
            f"route {route!r}: {both} of {deployment!r} are fixed; the caller cannot also set them"
        )
    if templated(fixed):
        raise ConfigurationError(f"route {route!r}: fixed parameters of {deployment!r} are values")
    return tuple(str(p) for p in names), {str(k): v for k, v in fixed.items()}


def require_images(route: str, passes_image: bool, images: tuple[str, ...]) -> None:
    """A route that passes an image must say which repositories it may ship."""
    if passes_image and not images:
        raise ConfigurationError(
            f"route {route!r} passes an image: list the repositories it may ship under "
            "'images' (e.g. images: [registry.local/web-app])"
        )
