"""The weekly capacity report started as the schedule starts it, on backfilled history: every
resource a row, the disk's forecast from the synthetic trend, a chart per resource."""

from __future__ import annotations

from devstack.backfill import Profile
from tests.capacity_support import TITLES, ensure_history
from tests.served_support import RunPath, assert_completed
from tests.support import oplog_row
from tests.triage_support import artifacts_of

REPORT = "capacity-report/capacity-report-weekly"


def test_the_weekly_report_forecasts_the_backfilled_disk(runpath: RunPath) -> None:
    ensure_history(runpath.stack)
    run = runpath.api.finish(REPORT, timeout=300)
    assert_completed(run, runpath.log)
    row = oplog_row(runpath.stack, run["id"])
    rows = {r["Resource"]: r for r in row["details"]["rows"]}
    assert list(rows) == TITLES
    p = Profile()
    days = round((0.80 - p.disk_now) / p.disk_per_day)
    assert rows["Disk"]["forecast"] in {
        f"crosses 80% in {d} days" for d in range(days - 2, days + 3)
    }
    (table,) = artifacts_of(runpath, run["id"], "capacity-report")
    assert table["type"] == "table"
    assert artifacts_of(runpath, run["id"], "capacity-disk")[0]["type"] == "image"
