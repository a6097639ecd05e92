"""Read the PostgreSQL server log on this machine: the login events of a period.

The access-log review runs in the served process on the machine that holds the server's log
(``Settings.postgres_log_file``, or the flow's ``log_file`` parameter). Lines are streamed, so
a large log costs no memory beyond its login events; lines before ``since`` are skipped.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import task

from decisions.access_log import LoginEvent, parse_line
from opsflows import retry
from opsflows.errors import ConfigurationError, PermanentError


@task(name="read PostgreSQL log", **retry.ONCE)
def read_login_events(
    path: Path, since: datetime, until: datetime
) -> tuple[tuple[LoginEvent, ...], int]:
    """The login events logged in ``[since, until)`` and the number of lines read."""
    events: list[LoginEvent] = []
    lines = 0
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                lines += 1
                event = parse_line(line)
                if event is not None and since <= event.at < until:
                    events.append(event)
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"the PostgreSQL log {path} does not exist on this machine",
            hint="run the review where the server logs (the served process of its stack), "
            "or pass log_file / set OPSFLOWS_POSTGRES_LOG_FILE",
        ) from exc
    except PermissionError as exc:
        raise PermanentError(
            f"the PostgreSQL log {path} is not readable by this process",
            hint="run the served process as a user that may read the server's log",
        ) from exc
    return tuple(events), lines
