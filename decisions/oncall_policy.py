"""The on-call schedule file (``policy/oncall.yaml``) parsed and validated into a Schedule.

::

    version: 1
    timezone: Europe/Berlin            # shifts change at local wall-clock time here
    rotation:
      start: 2026-01-05T09:00:00+01:00 # the first shift's start; its local time is the change time
      change_at: "09:00"               # optional; with a date as start, required
      shift_days: 7
      primary: [alice, bob, carol]
      secondary: [bob, carol, alice]   # optional: default, the primary list's next person
    overrides:                         # half-open windows [start, end)
      - {start: 2026-01-07T09:00:00+01:00, end: 2026-01-09T09:00:00+01:00,
         role: primary, replaces: alice, by: carol, reason: alice at a conference}
    escalation:
      lead: dave
    channels:                          # person -> notification block documents (slug/name)
      alice: [custom-webhook/page-alice]

Primary and secondary people (rotation and overrides) must be members of the ``on-call`` role
of the roles policy; the lead a member of ``on-call`` or ``devops``. Instants without an
offset are read in the schedule's ``timezone``. Overrides of the same role must not overlap
(refused, naming both), and no instant may have one person as both primary and secondary.
Every error names the file and what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from decisions.access import RolesPolicy, normal
from decisions.oncall import (
    LEAD,
    PRIMARY,
    ROLES,
    SECONDARY,
    Override,
    Rotation,
    Schedule,
    change_points,
    on_call_at,
)
from opsflows.errors import ConfigurationError

ONCALL_ROLE = "on-call"
LEAD_ROLES = ("on-call", "devops")
_BLOCK_REF = re.compile(r"^[a-z0-9][a-z0-9-]*/[A-Za-z0-9][A-Za-z0-9_. -]*$")


class _Reader:
    """Errors that name the schedule file and what to fix."""

    def __init__(self, source: str, roles: RolesPolicy, roles_source: str) -> None:
        self.source, self.roles, self.roles_source = source, roles, roles_source
        self.zone: ZoneInfo = ZoneInfo("UTC")

    def error(self, what: str, hint: str) -> ConfigurationError:
        return ConfigurationError(f"{self.source}: {what}", hint=hint)

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(f"{where} must be a mapping", f"see the example in {self.source}")
        return value

    def member(self, value: Any, where: str, roles: tuple[str, ...] = (ONCALL_ROLE,)) -> str:
        person = normal(str(value)) if isinstance(value, str) else ""
        if not person:
            raise self.error(f"{where} must name a person", f"write a name, e.g. {where}: alice")
        members = {m for r in roles if r in self.roles.roles for m in self.roles.roles[r].members}
        if person not in members:
            listed = " or ".join(f"`{r}`" for r in roles)
            raise self.error(
                f"{where} names {person!r}, who is not a member of the {listed} role in "
                f"{self.roles_source}",
                f"fix the name in {self.source}, or add {person} to roles.{roles[0]}.members "
                f"in {self.roles_source} (a reviewed commit)",
            )
        return person

    def people(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(
                f"{where} must be a non-empty list of people", f"e.g. {where}: [alice, bob, carol]"
            )
        people = tuple(self.member(v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(set(people)) != len(people):
            raise self.error(f"{where} names someone twice", "list each person once")
        return people

    def instant(self, value: Any, where: str) -> datetime:
        """An instant in UTC: a YAML timestamp, an ISO string or a date (midnight); naive
        ones in the schedule's zone."""
        try:
            if isinstance(value, str):
                value = datetime.fromisoformat(value.strip())
            elif isinstance(value, date) and not isinstance(value, datetime):
                value = datetime(value.year, value.month, value.day)
        except ValueError:
            value = None
        if not isinstance(value, datetime):
            raise self.error(
                f"{where} is not a date and time", f"write e.g. {where}: 2026-03-02T09:00:00Z"
            )
        at: datetime = value
        if at.tzinfo is None or at.utcoffset() is None:
            at = at.replace(tzinfo=self.zone)
        return at.astimezone(UTC)


def parse_schedule(
    raw: Any, roles: RolesPolicy, source: str = "policy/oncall.yaml", roles_source: str = ""
) -> Schedule:
    """The schedule file's parsed YAML, validated against the roles policy.

    Raises:
        ConfigurationError: anything wrong, with the file's name and what to fix.
    """
    read = _Reader(source, roles, roles_source or "policy/roles.yaml")
    if not raw:
        raise read.error("the schedule is empty", "write a rotation (see README: On-call)")
    doc = read.mapping(raw, "the file")
    unknown = set(doc) - {"version", "timezone", "rotation", "overrides", "escalation", "channels"}
    if unknown:
        raise read.error(
            f"unknown keys {', '.join(sorted(map(str, unknown)))}",
            "use version, timezone, rotation, overrides, escalation, channels",
        )
    zone_name = str(doc.get("timezone") or "UTC")
    try:
        read.zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise read.error(
            f"timezone {zone_name!r} is not a known time zone",
            "use an IANA name such as UTC or Europe/Berlin",
        ) from exc
    rotation = _rotation(read, read.mapping(doc.get("rotation"), "rotation"), zone_name)
    escalation = read.mapping(doc.get("escalation") or {}, "escalation")
    if not escalation.get(LEAD):
        raise read.error(
            "escalation.lead is missing", "name the lead, e.g. escalation: {lead: dave}"
        )
    lead = read.member(escalation[LEAD], "escalation.lead", LEAD_ROLES)
    overrides = tuple(
        _override(read, read.mapping(o, f"overrides[{i}]"), i)
        for i, o in enumerate(doc.get("overrides") or [])
    )
    schedule = Schedule(
        rotation=rotation,
        lead=lead,
        overrides=overrides,
        channels=_channels(read, doc.get("channels") or {}),
        source=source,
        version=str(doc.get("version", "")),
    )
    _no_overlaps(read, overrides)
    _never_both(read, schedule)
    return schedule


def _rotation(read: _Reader, doc: Mapping[str, Any], zone_name: str) -> Rotation:
    unknown = set(doc) - {"start", "change_at", "shift_days", PRIMARY, SECONDARY}
    if unknown:
        raise read.error(
            f"unknown keys in rotation: {', '.join(sorted(map(str, unknown)))}",
            "use start, change_at, shift_days, primary, secondary",
        )
    if "start" not in doc:
        raise read.error(
            "rotation.start is missing", "give the first shift's start, e.g. 2026-01-05T09:00Z"
        )
    days = doc.get("shift_days", 7)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 366:
        raise read.error(
            f"rotation.shift_days {days!r} is not a whole number of days from 1 to 366",
            "weekly shifts: shift_days: 7",
        )
    primary = read.people(doc.get(PRIMARY), "rotation.primary")
    secondary: tuple[str, ...] = ()
    if doc.get(SECONDARY) not in (None, "next"):
        secondary = read.people(doc.get(SECONDARY), "rotation.secondary")
    elif len(primary) < 2:
        raise read.error(
            "rotation.primary names one person: the secondary (the next person) would be the same",
            "list at least two people, or give rotation.secondary its own list",
        )
    return Rotation(
        start=_first_start(read, doc),
        timezone=zone_name,
        shift_days=days,
        primary=primary,
        secondary=secondary,
    )


def _change_time(read: _Reader, value: Any) -> time:
    """``change_at``: "HH:MM" (YAML reads an unquoted 9:00 as 540 minutes: taken as such)."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return time(value // 60, value % 60)
        return time.fromisoformat(str(value).strip())
    except ValueError:
        raise read.error(
            f"rotation.change_at {value!r} is not a time of day", 'write e.g. change_at: "09:00"'
        ) from None


def _first_start(read: _Reader, doc: Mapping[str, Any]) -> datetime:
    """The first shift's start: an instant, or a date with ``change_at`` (local time in the
    schedule's zone). Given both, the instant's local time must be ``change_at``."""
    raw, change = doc["start"], doc.get("change_at")
    at = _change_time(read, change) if change is not None else None
    day: date | None = None
    if isinstance(raw, date) and not isinstance(raw, datetime):
        day = raw
    elif isinstance(raw, str) and len(raw.strip()) == len("2026-01-05"):
        try:
            day = date.fromisoformat(raw.strip())
        except ValueError:
            day = None
    if day is not None:
        if at is None:
            raise read.error(
                "rotation.start is a date without a time",
                'give rotation.change_at (e.g. "09:00") or a start with its time',
            )
        return datetime.combine(day, at, tzinfo=read.zone).astimezone(UTC)
    start = read.instant(raw, "rotation.start")
    local = start.astimezone(read.zone).time()
    if at is not None and local != at:
        raise read.error(
            f"rotation.start is {local:%H:%M} in {read.zone.key} but change_at is {at:%H:%M}",
            "shifts change at the first shift's start: make the two agree",
        )
    return start


def _override(read: _Reader, doc: Mapping[str, Any], i: int) -> Override:
    where = f"overrides[{i}]"
    role = str(doc.get("role") or "")
    if role not in ROLES:
        raise read.error(f"{where}.role {role!r} is not one of {', '.join(ROLES)}", "e.g. primary")
    allowed = LEAD_ROLES if role == LEAD else (ONCALL_ROLE,)
    for key in ("start", "end", "by", "reason"):
        if not doc.get(key):
            raise read.error(f"{where}.{key} is missing", "an override has start, end, by, reason")
    start = read.instant(doc["start"], f"{where}.start")
    end = read.instant(doc["end"], f"{where}.end")
    if end <= start:
        raise read.error(f"{where} ends before it starts", f"make {where}.end later than start")
    replaces = doc.get("replaces")
    return Override(
        start=start,
        end=end,
        role=role,
        by=read.member(doc["by"], f"{where}.by", allowed),
        reason=str(doc["reason"]).strip(),
        replaces=read.member(replaces, f"{where}.replaces", allowed) if replaces else None,
    )


def _channels(read: _Reader, raw: Any) -> dict[str, tuple[str, ...]]:
    channels: dict[str, tuple[str, ...]] = {}
    for name, refs in read.mapping(raw, "channels").items():
        person = read.member(name, f"channels.{name}", LEAD_ROLES)
        listed = [refs] if isinstance(refs, str) else refs
        if not isinstance(listed, list) or not all(
            isinstance(r, str) and _BLOCK_REF.match(r) for r in listed
        ):
            raise read.error(
                f"channels.{name} must be notification block documents as slug/name",
                f"e.g. channels: {{{person}: [custom-webhook/page-{person}]}}",
            )
        channels[person] = tuple(listed)
    return channels


def _no_overlaps(read: _Reader, overrides: tuple[Override, ...]) -> None:
    for i, a in enumerate(overrides):
        for j in range(i + 1, len(overrides)):
            b = overrides[j]
            if a.role == b.role and a.start < b.end and b.start < a.end:
                raise read.error(
                    f"overrides[{i}] and overrides[{j}] both replace the {a.role} between "
                    f"{max(a.start, b.start).isoformat()} and {min(a.end, b.end).isoformat()}",
                    "overrides of one role must not overlap: end one where the other starts",
                )


def _never_both(read: _Reader, schedule: Schedule) -> None:
    """No override makes one person primary and secondary at once (the secondary page would
    reach the person who did not answer the first)."""
    for i, override in enumerate(schedule.overrides):
        points = change_points(schedule, override.start, override.end)
        if override.replaces and not any(
            override in on_call_at(schedule, at).overrides for at in points
        ):
            raise read.error(
                f"overrides[{i}] replaces {override.replaces}, who is never {override.role} "
                f"between {override.start.isoformat()} and {override.end.isoformat()}",
                "check the dates and `replaces`: "
                f"opsflows oncall --at {override.start:%Y-%m-%dT%H:%MZ}",
            )
        for at in points:
            who = on_call_at(schedule, at)
            if who.primary == who.secondary:
                raise read.error(
                    f"overrides[{i}] makes {who.primary} both primary and secondary at "
                    f"{at.isoformat()}",
                    "override the other role too, or pick someone else",
                )
    if schedule.rotation.secondary:
        rotation = schedule.rotation
        cycle = len(rotation.primary) * len(rotation.secondary)
        for k in range(cycle):
            if rotation.primary_of(k) == rotation.secondary_of(k):
                raise read.error(
                    f"shift {k} has {rotation.primary_of(k)} as both primary and secondary",
                    "reorder rotation.secondary so each shift pairs two different people",
                )
