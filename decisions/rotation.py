"""Credential rotation as a state machine over Secrets Manager staging labels.

A rotation is identified by its client request token, which becomes the id of the new secret
version. Everything the next step depends on is observable, so a rerun after a crash decides
again from what it sees instead of remembering what it did::

    token version missing                       -> create_pending
    token version AWSPENDING, password not set  -> set_password
    password set, login not tested in this run  -> test
    tested, consumers not on the new version    -> switch_consumers
    consumers switched                          -> finish  (move AWSCURRENT, drop AWSPENDING)
    token version AWSCURRENT (no AWSPENDING)    -> done

Strategies decide which role receives the new password: ``single_user`` changes the password
of the role in use (consumers may fail until they are switched); ``alternating_users`` gives it
to the role *not* named by AWSCURRENT (``<user>`` or ``<user>_clone``), so both stay valid.

Pure: no vendor SDK, no I/O, no secret values (only version ids, labels and role names).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from opsflows.errors import ConfigurationError

CURRENT = "AWSCURRENT"
PENDING = "AWSPENDING"
PREVIOUS = "AWSPREVIOUS"
CLONE_SUFFIX = "_clone"
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
_ROLE = re.compile(r"^[a-z_][a-z0-9_]*$")
_TOKEN = re.compile(r"^[A-Za-z0-9-]{32,64}$")


class Strategy(StrEnum):
    """How the new password reaches the database."""

    SINGLE_USER = "single_user"
    ALTERNATING_USERS = "alternating_users"


class Step(StrEnum):
    """The next thing a rotation run has to do."""

    CREATE_PENDING = "create_pending"
    SET_PASSWORD = "set_password"
    TEST = "test"
    SWITCH_CONSUMERS = "switch_consumers"
    FINISH = "finish"
    DONE = "done"
    ABORT = "abort"


#: The steps that change something, in protocol order.
STEPS: tuple[Step, ...] = (
    Step.CREATE_PENDING,
    Step.SET_PASSWORD,
    Step.TEST,
    Step.SWITCH_CONSUMERS,
    Step.FINISH,
)


def parse_strategy(value: str) -> Strategy:
    """The strategy named ``value``, or a ConfigurationError listing the valid names."""
    try:
        return Strategy(value)
    except ValueError:
        names = ", ".join(s.value for s in Strategy)
        raise ConfigurationError(
            f"unknown rotation strategy {value!r}", hint=f"use one of: {names}"
        ) from None


def check_token(token: str) -> str:
    """Validate a client request token (32 to 64 letters, digits or dashes, like a UUID)."""
    if not _TOKEN.match(token):
        raise ConfigurationError(
            "the rotation token must be 32 to 64 letters, digits or dashes",
            hint="leave rotation_id empty to derive one, or pass a short rotation_id",
        )
    return token


def rotation_token(secret_id: str, rotation_id: str) -> str:
    """The client request token of one rotation of one secret (a UUID derived from both).

    The same ``rotation_id`` (by default the month, ``2025-11``) always gives the same token, so
    a rerun resumes that rotation, or does nothing once it is complete.
    """
    if not secret_id or not rotation_id.strip():
        raise ConfigurationError("a rotation needs a secret id and a rotation id")
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"opsflows:rotation:{secret_id}:{rotation_id}"))


@dataclass(frozen=True)
class Labels:
    """The secret's ``VersionIdsToStages``: version id -> staging labels."""

    versions: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, stages: Mapping[str, Iterable[str]]) -> Labels:
        """Build from the ``describe_secret`` shape (``{version: [labels]}``)."""
        return cls({v: frozenset(labels) for v, labels in stages.items()})

    def holding(self, label: str) -> str | None:
        """The version carrying ``label`` (labels are unique per secret), if any."""
        return next((v for v, labels in sorted(self.versions.items()) if label in labels), None)

    def labels_of(self, version: str) -> frozenset[str] | None:
        """The labels of ``version``, or None when the version does not exist."""
        return self.versions.get(version)

    @property
    def current(self) -> str | None:
        return self.holding(CURRENT)

    @property
    def pending(self) -> str | None:
        return self.holding(PENDING)

    @property
    def previous(self) -> str | None:
        return self.holding(PREVIOUS)


@dataclass(frozen=True)
class Observed:
    """What a run saw before deciding.

    Attributes:
        labels: The secret's versions and labels.
        token: This rotation's client request token (the new version's id).
        password_set: The pending password is the target role's password in PostgreSQL
            (None: not observed, treated as not set; setting it again is harmless).
        login_ok: The login test with the pending credential passed in this run (None: not
            run yet; False: it failed).
        consumers_switched: Every consumer carries the pending version and is healthy on it.
    """

    labels: Labels
    token: str
    password_set: bool | None = None
    login_ok: bool | None = None
    consumers_switched: bool | None = None


@dataclass(frozen=True)
class Decision:
    """The next step and why; ``superseded`` is another rotation's stray AWSPENDING version."""

    step: Step
    reason: str
    superseded: str | None = None


def next_step(obs: Observed) -> Decision:
    """Decide the next rotation step from what was observed (see the module docstring)."""
    current = obs.labels.current
    if current is None:
        raise ConfigurationError(
            "the secret has no AWSCURRENT version, so there is nothing to rotate from",
            hint="store the credential in use as the secret's AWSCURRENT value",
        )
    mine = obs.labels.labels_of(obs.token)
    if mine is None:
        stray = obs.labels.pending
        if stray is not None:
            return Decision(
                Step.CREATE_PENDING,
                f"another rotation left version {stray} as AWSPENDING; this rotation replaces it",
                superseded=stray,
            )
        return Decision(Step.CREATE_PENDING, "no version for this rotation yet")
    if CURRENT in mine:
        if PENDING in mine:
            return Decision(Step.FINISH, "AWSCURRENT moved; AWSPENDING still to be removed")
        return Decision(Step.DONE, f"version {obs.token} is already AWSCURRENT")
    if PENDING not in mine:
        why = "a later rotation completed" if PREVIOUS in mine else "it was superseded"
        return Decision(
            Step.DONE,
            f"version {obs.token} is no longer pending ({why}); nothing to do for this rotation",
        )
    if not obs.password_set:
        return Decision(Step.SET_PASSWORD, "the pending password is not set in the database")
    if obs.login_ok is None:
        return Decision(Step.TEST, "the pending credential has not been tested in this run")
    if not obs.login_ok:
        return Decision(Step.ABORT, "the pending credential failed its login test")
    if not obs.consumers_switched:
        return Decision(Step.SWITCH_CONSUMERS, "consumers still use the current credential")
    return Decision(Step.FINISH, "tested and every consumer runs on the pending credential")


# --- roles -------------------------------------------------------------------------------


def check_role(name: str) -> str:
    """Validate a role name we will put in DDL (lowercase identifier, fits with the suffix)."""
    if not _ROLE.match(name) or len(name) + len(CLONE_SUFFIX) > _MAX_IDENTIFIER:
        raise ConfigurationError(
            f"role name {name!r} is not a plain lowercase identifier of at most "
            f"{_MAX_IDENTIFIER - len(CLONE_SUFFIX)} characters",
            hint="fix the username field of the secret",
        )
    return name


def base_role(username: str) -> str:
    """``app`` for both ``app`` and ``app_clone``."""
    return username.removesuffix(CLONE_SUFFIX) if username.endswith(CLONE_SUFFIX) else username


def clone_role(username: str) -> str:
    """The alternate role of a pair (``app`` -> ``app_clone``)."""
    return base_role(username) + CLONE_SUFFIX


def target_role(strategy: Strategy, current_username: str) -> str:
    """The role whose password this rotation sets.

    Single user: the role in use. Alternating users: the role of the pair that AWSCURRENT does
    *not* name, so the credential in use keeps working.
    """
    check_role(base_role(current_username))
    if strategy is Strategy.SINGLE_USER:
        return current_username
    base = base_role(current_username)
    return clone_role(base) if current_username == base else base


# --- grant parity ------------------------------------------------------------------------

#: ``(kind, object, privilege)``, e.g. ``("table", "public.orders", "SELECT")``,
#: ``("member", "readers", "")`` or ``("attribute", "rolcanlogin", "true")``.
Privilege = tuple[str, str, str]


@dataclass(frozen=True)
class GrantParity:
    """Effective privileges one role of the pair has and the other lacks."""

    role: str
    clone: str
    only_role: frozenset[Privilege]
    only_clone: frozenset[Privilege]

    @property
    def equal(self) -> bool:
        return not self.only_role and not self.only_clone

    def summary(self, limit: int = 8) -> str:
        """A short, loggable description of the differences."""
        if self.equal:
            return f"{self.role} and {self.clone} have the same grants"
        parts = []
        for who, diff in ((self.role, self.only_role), (self.clone, self.only_clone)):
            if diff:
                shown = ", ".join(":".join(p for p in item if p) for item in sorted(diff)[:limit])
                more = f" (+{len(diff) - limit} more)" if len(diff) > limit else ""
                parts.append(f"only {who} has {shown}{more}")
        return "; ".join(parts)


def pair_links(role: str) -> frozenset[Privilege]:
    """What makes ``<role>_clone`` act as ``role``: it is a member of ``role`` and its sessions
    start with ``SET ROLE role`` (``ALTER ROLE <clone> SET role = <role>``).

    So the clone holds every privilege of ``role``, owns nothing of its own, and whatever it
    creates (a migration's tables) is owned by ``role``: DDL works whichever role of the pair
    AWSCURRENT names (AWS's alternating-users rotation makes the clone a member the same way).
    """
    return frozenset({("member", role, ""), ("setting", f"role={role}", "")})


def clone_is_linked(role: str, clone_privs: Iterable[Privilege]) -> bool:
    """Whether the clone is a member of ``role`` and starts its sessions as ``role``."""
    return pair_links(role) <= frozenset(clone_privs)


def grant_parity(
    role: str, role_privs: Iterable[Privilege], clone: str, clone_privs: Iterable[Privilege]
) -> GrantParity:
    """Compare the effective privileges of the two roles of an alternating pair.

    The clone's links to ``role`` (:func:`pair_links`) are how it should differ, so they are
    not differences; anything else either role holds alone is.
    """
    mine, theirs = frozenset(role_privs), frozenset(clone_privs) - pair_links(role)
    return GrantParity(role, clone, mine - theirs, theirs - mine)


# --- recovery ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """What a failed run must undo so AWSCURRENT is the working credential again.

    Attributes:
        restore_password: Set the AWSCURRENT password on its role again (single user: the
            failed run may already have changed it).
        restore_consumers: Point consumers back at the AWSCURRENT version.
        reason: Why, for the report.
    """

    restore_password: bool
    restore_consumers: bool
    reason: str


def recovery(strategy: Strategy, failed: Step, current_moved: bool | None) -> Recovery:
    """Plan the undo after step ``failed`` raised.

    ``current_moved`` says whether AWSCURRENT names this rotation's version after the failure.
    Only ``finish`` moves the label, so for every earlier step it is False. After a failed
    ``finish`` it is True (the move took effect: nothing to undo), False (the move certainly
    did not happen: undo) or None (Secrets Manager could not tell us: undoing could break the
    credential it now serves, so nothing is undone and the report asks for a rerun).
    """
    if failed is Step.FINISH and current_moved is None:
        return Recovery(
            False,
            False,
            "unknown whether AWSCURRENT moved (Secrets Manager unreadable); rerun the rotation",
        )
    if current_moved:
        return Recovery(False, False, "AWSCURRENT already names the new version; nothing to undo")
    if failed in (Step.CREATE_PENDING, Step.DONE):
        return Recovery(False, False, "nothing outside Secrets Manager changed yet")
    consumers = failed in (Step.SWITCH_CONSUMERS, Step.FINISH)
    back = "; consumers go back to AWSCURRENT" if consumers else ""
    if strategy is Strategy.SINGLE_USER:
        return Recovery(
            True,
            consumers,
            "single user: the role may already have the pending password; "
            "set the AWSCURRENT password again" + back,
        )
    return Recovery(
        False, consumers, "alternating users: AWSCURRENT's role was never touched" + back
    )
