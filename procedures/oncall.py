"""The on-call schedule, read from its file, and where a page goes at the moment it is sent.

The schedule file (the ``oncall_file`` setting, ``OPSFLOWS_ONCALL_FILE``; default
``policy/oncall.yaml``) is read with the roles policy's reader
(:func:`procedures.approval_gate.read_policy_document`) each time a page is sent, so a
reviewed change (an override) applies to incidents already open. A page never fails because
of the schedule: no file, a file that does not validate, nobody on call, or a person without
a channel, and the page follows the notification routing as before, with the reason logged.
"""

# No `from __future__ import annotations`: served runs pickle flow functions by value.

from datetime import UTC, datetime
from pathlib import Path

from prefect.logging import get_run_logger

from decisions.oncall import LEVEL_ROLES, PageTarget, Schedule, page_target
from decisions.oncall_policy import parse_schedule
from opsflows.errors import OpsError, scrub
from opsflows.settings import get_settings
from procedures.approval_gate import load_policy, read_policy_document


def schedule_file() -> Path:
    return Path(get_settings().oncall_file)


def load_schedule(path: Path | None = None) -> Schedule | None:
    """The validated schedule from ``path`` (default: the setting); None when it is absent.

    Raises:
        ConfigurationError: the file (or the roles policy it is checked against) is not
            valid YAML or does not validate; the message names the file and what to fix.
    """
    where = Path(path or schedule_file())
    if not where.exists():
        return None
    raw = read_policy_document(
        where,
        what="the on-call schedule",
        restore="restore policy/oncall.yaml or point OPSFLOWS_ONCALL_FILE at your schedule",
    )
    roles_file = get_settings().roles_file
    return parse_schedule(raw, load_policy(), str(where), str(roles_file))


def target_now(level: str, routed: list[str]) -> PageTarget:
    """Where a page of ``level`` goes now: the scheduled person's channel, else ``routed``
    (the reason logged as a warning). Never raises."""
    now = datetime.now(UTC)
    try:
        schedule = load_schedule()
        target = page_target(schedule, level, now, tuple(routed))
        if schedule is None:
            why = f"no on-call schedule at {schedule_file()}: the routing's channels"
            target = PageTarget(tuple(routed), why=why)
    except OpsError as exc:
        reason = f"the on-call schedule cannot say who: {scrub(str(exc))}"
        target = PageTarget(tuple(routed), why=f"{reason}; the routing's channels")
    if not target.scheduled and level in LEVEL_ROLES:
        get_run_logger().warning("page to %s: %s", level, target.why)
    return target
