"""What ``opsflows oncall`` shows: who is on call at an instant and in the next shift."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from decisions.oncall import Schedule, Shift, current_and_next
from opsflows.errors import ConfigurationError


def parse_at(text: str) -> datetime:
    """An ISO 8601 instant (``Z`` or an offset; without one it is read in the schedule's
    zone by :func:`oncall_view`)."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigurationError(
            f"--at {text!r} is not an ISO 8601 date and time",
            hint="e.g. --at 2026-03-02T09:00:00Z or --at 2026-03-02T10:00+01:00",
        ) from exc


def _shift(schedule: Schedule, shift: Shift) -> dict[str, Any]:
    who = shift.who
    return {
        "shift": shift.index,
        "start": shift.start.isoformat(),
        "end": shift.end.isoformat(),
        "primary": who.primary,
        "secondary": who.secondary,
        "lead": who.lead,
        "overrides": [
            {
                "role": o.role,
                "by": o.by,
                "replaces": o.replaces,
                "start": o.start.isoformat(),
                "end": o.end.isoformat(),
                "reason": o.reason,
            }
            for o in who.overrides
        ],
        "channels": {
            person: list(schedule.channel_of(person))
            for person in dict.fromkeys((who.primary, who.secondary, who.lead))
        },
    }


def oncall_view(schedule: Schedule, at: datetime) -> dict[str, Any]:
    """Who is on call at ``at`` (naive: in the schedule's zone) and in the next shift."""
    if at.tzinfo is None or at.utcoffset() is None:
        at = at.replace(tzinfo=schedule.rotation.zone)
    now, following = current_and_next(schedule, at)
    return {
        "file": schedule.source,
        "version": schedule.version,
        "timezone": schedule.rotation.timezone,
        "at": now.who.at.isoformat(),
        "now": _shift(schedule, now),
        "next": _shift(schedule, following),
    }


def render_json(view: dict[str, Any]) -> str:
    return json.dumps(view, sort_keys=True)


def render_text(view: dict[str, Any]) -> str:
    """The view for people: instants in the schedule's zone and UTC."""
    zone = view["timezone"]

    def when(iso: str) -> str:
        from zoneinfo import ZoneInfo

        at = datetime.fromisoformat(iso)
        local = at.astimezone(ZoneInfo(zone))
        return f"{local:%a %Y-%m-%d %H:%M} {zone} ({at:%H:%M} UTC)"

    def block(title: str, shift: dict[str, Any]) -> list[str]:
        lines = [f"{title}: shift {shift['shift']}, {when(shift['start'])} → {when(shift['end'])}"]
        for role in ("primary", "secondary", "lead"):
            person = shift[role]
            channel = ", ".join(shift["channels"].get(person) or []) or "routing (no channel)"
            lines.append(f"  {role:9}  {person:12} pages: {channel}")
        for o in shift["overrides"]:
            whom = f" for {o['replaces']}" if o["replaces"] else ""
            lines.append(
                f"  override: {o['by']} as {o['role']}{whom} until {when(o['end'])}: {o['reason']}"
            )
        return lines

    lines = [f"On call at {when(view['at'])} ({view['file']}, version {view['version']})"]
    lines += block("Now", view["now"]) + block("Next", view["next"])
    return "\n".join(lines) + "\n"
