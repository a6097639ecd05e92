"""Who is on call when: the on-call schedule (RUNBOOK.md "On-Call Responsibilities").

The schedule (``policy/oncall.yaml``, parsed and validated by :mod:`decisions.oncall_policy`)
is a weekly rotation of a primary and a secondary, overrides, the escalation lead and each
person's notification channel. Everything here is a pure function of the schedule and an
instant; every instant is compared in UTC.

* **Rotation.** Shift ``k`` (``k >= 0``) starts at the change time (the local time of the
  first shift's start, in the schedule's ``timezone``) on the first shift's local date plus
  ``k * shift_days``: shifts change at the same wall-clock time across a DST change, so a
  shift that spans one is an hour longer or shorter. Its primary is ``primary[k % n]``; its
  secondary ``secondary[k % m]``, or the next person of the primary list when there is no
  secondary list. Before the first shift nobody is on call: that is an error, not a silence.
* **Overrides.** An override replaces one role (primary, secondary or lead) for the half-open
  window ``[start, end)``; with ``replaces``, only while the rotation has that person in the
  role (a swap of alice's part of a week). Two overrides of the same role never overlap: the
  schedule is refused (:mod:`decisions.oncall_policy`), so which one wins is never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from opsflows.errors import ConfigurationError

PRIMARY, SECONDARY, LEAD = "primary", "secondary", "lead"
ROLES = (PRIMARY, SECONDARY, LEAD)
#: The incident flow's paging levels (``decisions.incidents.paging_plan``) → schedule roles.
LEVEL_ROLES = {"on-call": PRIMARY, "secondary": SECONDARY, "lead": LEAD}


@dataclass(frozen=True)
class Override:
    """``by`` takes ``role`` over for ``[start, end)`` (only from ``replaces``, when given)."""

    start: datetime
    end: datetime
    role: str
    by: str
    reason: str
    replaces: str | None = None

    def covers(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def describe(self) -> str:
        whom = f" for {self.replaces}" if self.replaces else ""
        return f"{self.by} as {self.role}{whom} ({self.reason})"


@dataclass(frozen=True)
class Rotation:
    """The weekly rotation: who holds primary and secondary in shift ``k``."""

    start: datetime  # the first shift's start (UTC)
    timezone: str
    shift_days: int
    primary: tuple[str, ...]
    secondary: tuple[str, ...] = ()  # empty: the primary list's next person

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def change_time(self) -> time:
        """The local wall-clock time shifts change at."""
        return self.start.astimezone(self.zone).time().replace(tzinfo=None)

    def shift_start(self, k: int) -> datetime:
        """When shift ``k`` starts (UTC); DST-aware wall-clock arithmetic in the zone."""
        first: date = self.start.astimezone(self.zone).date()
        local = datetime.combine(first + timedelta(days=k * self.shift_days), self.change_time)
        return local.replace(tzinfo=self.zone).astimezone(UTC)

    def index_at(self, at: datetime) -> int:
        """The shift holding ``at`` (-1 before the first)."""
        if at < self.start:
            return -1
        days = (at.astimezone(self.zone).date() - self.start.astimezone(self.zone).date()).days
        k = max(0, days // self.shift_days)
        while k > 0 and self.shift_start(k) > at:
            k -= 1
        while self.shift_start(k + 1) <= at:
            k += 1
        return k

    def primary_of(self, k: int) -> str:
        return self.primary[k % len(self.primary)]

    def secondary_of(self, k: int) -> str:
        if self.secondary:
            return self.secondary[k % len(self.secondary)]
        return self.primary[(k + 1) % len(self.primary)]


@dataclass(frozen=True)
class Schedule:
    """The validated schedule (:func:`decisions.oncall_policy.parse_schedule`)."""

    rotation: Rotation
    lead: str
    overrides: tuple[Override, ...] = ()
    channels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "policy/oncall.yaml"
    version: str = ""

    def channel_of(self, person: str) -> tuple[str, ...]:
        """The notification block documents (slug/name) ``person``'s pages go to."""
        return tuple(self.channels.get(person, ()))


@dataclass(frozen=True)
class OnCall:
    """Who holds each role at one instant, and the overrides that put them there."""

    at: datetime
    primary: str
    secondary: str
    lead: str
    overrides: tuple[Override, ...] = ()

    def person(self, role: str) -> str:
        return {PRIMARY: self.primary, SECONDARY: self.secondary, LEAD: self.lead}[role]


@dataclass(frozen=True)
class Shift:
    """One shift of the rotation, with who is on call in it (at ``who.at``)."""

    index: int
    start: datetime
    end: datetime
    who: OnCall


def utc(at: datetime) -> datetime:
    """``at`` in UTC (a naive instant is refused: it would be read in the host's zone)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ConfigurationError(
            f"the instant {at.isoformat()} has no time zone",
            hint="give an offset or Z, e.g. 2026-03-02T09:00:00Z",
        )
    return at.astimezone(UTC)


def scheduled(schedule: Schedule, role: str, k: int) -> str:
    """Who the rotation (no override) puts in ``role`` in shift ``k``."""
    rotation = schedule.rotation
    if role == PRIMARY:
        return rotation.primary_of(k)
    if role == SECONDARY:
        return rotation.secondary_of(k)
    return schedule.lead


def nobody_before(schedule: Schedule, at: datetime) -> ConfigurationError:
    start = schedule.rotation.start
    return ConfigurationError(
        f"{schedule.source}: nobody is on call at {at.isoformat()}: the rotation starts at "
        f"{start.isoformat()}",
        hint=f"move rotation.start in {schedule.source} to before the first shift you need",
    )


def on_call_at(schedule: Schedule, at: datetime) -> OnCall:
    """Who is primary, secondary and lead at ``at``: overrides win over the rotation.

    Raises:
        ConfigurationError: ``at`` is before the rotation's first shift (nobody is on call),
            or ``at`` is naive.
    """
    at = utc(at)
    k = schedule.rotation.index_at(at)
    if k < 0:
        raise nobody_before(schedule, at)
    who = {role: scheduled(schedule, role, k) for role in ROLES}
    applied: list[Override] = []
    for override in schedule.overrides:
        if not override.covers(at):
            continue
        if override.replaces is not None and override.replaces != who[override.role]:
            continue
        who[override.role] = override.by
        applied.append(override)
    return OnCall(at, who[PRIMARY], who[SECONDARY], who[LEAD], tuple(applied))


def shift_at(schedule: Schedule, at: datetime) -> Shift:
    """The rotation's shift holding ``at``, with who is on call at ``at``."""
    at = utc(at)
    k = schedule.rotation.index_at(at)
    if k < 0:
        raise nobody_before(schedule, at)
    rotation = schedule.rotation
    return Shift(k, rotation.shift_start(k), rotation.shift_start(k + 1), on_call_at(schedule, at))


def current_and_next(schedule: Schedule, at: datetime) -> tuple[Shift, Shift]:
    """The shift holding ``at`` (who: at ``at``) and the next one (who: at its start)."""
    now = shift_at(schedule, at)
    return now, shift_at(schedule, now.end)


def person_for_level(schedule: Schedule, level: str, at: datetime) -> str | None:
    """Who a page of ``level`` (``on-call``, ``secondary``, ``lead``) goes to at ``at``;
    None for a level the schedule does not name (``email``)."""
    role = LEVEL_ROLES.get(level)
    return on_call_at(schedule, at).person(role) if role else None


def change_points(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Every instant in ``[start, end)`` where who is on call may change (for validation)."""
    rotation = schedule.rotation
    points = {max(start, rotation.start)}
    k = max(0, rotation.index_at(start))
    while rotation.shift_start(k) < end:
        if rotation.shift_start(k) >= start:
            points.add(rotation.shift_start(k))
        k += 1
    for override in schedule.overrides:
        points.update(t for t in (override.start, override.end) if start <= t < end)
    return sorted(p for p in points if p < end)


@dataclass(frozen=True)
class PageTarget:
    """Where one page goes: the person the schedule names (if any) and the block documents.

    ``scheduled`` is False when the page follows the notification routing instead (no
    schedule, a level the schedule does not name, or a person without a channel); ``why``
    says which, for the run's log and the incident timeline.
    """

    refs: tuple[str, ...]
    person: str | None = None
    scheduled: bool = False
    why: str = ""


def page_target(
    schedule: Schedule | None, level: str, at: datetime, routed: tuple[str, ...]
) -> PageTarget:
    """Where a page of ``level`` sent at ``at`` goes: the channel of the person the schedule
    has in that role then, else ``routed`` (the routing's channel or severity route).

    Raises:
        ConfigurationError: nobody is on call at ``at`` (before the rotation starts).
    """
    if schedule is None:
        return PageTarget(routed, why="no on-call schedule: the routing's channels")
    person = person_for_level(schedule, level, at)
    if person is None:
        return PageTarget(routed, why=f"{level} is not an on-call role: the routing's channels")
    refs = schedule.channel_of(person)
    if not refs:
        return PageTarget(
            routed,
            person,
            why=f"{person} has no channel in {schedule.source}: the routing's channels",
        )
    role = LEVEL_ROLES[level]
    return PageTarget(refs, person, True, f"{role} per {schedule.source}")
