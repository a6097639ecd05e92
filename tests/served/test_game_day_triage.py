"""The game day's disk-full, pool-exhausted and memory-leak faults on staging, each handled by
its triage runbook through the real chain (alert, Alertmanager, incident, runbook), and
recorded with its timings (``game_day_results``)."""

from __future__ import annotations

from tests.incident_support import start_quiet
from tests.served.test_game_day import DEPLOYMENT, ENV, results_of
from tests.served_support import SERVE_ONLY, RunPath, assert_completed
from tests.support import oplog_row

#: fault -> (alert, runbook, action) the game day should record.
EXPECTED = {
    "disk-full": ("VolumeFull", "disk-full", "clear-logs"),
    "pool-exhausted": ("DbPoolExhausted", "connection-pool-exhausted", "restart"),
    "memory-leak": ("PodMemoryHigh", "memory-leak", "restart"),
}


@SERVE_ONLY
def test_disk_pool_and_leak_faults_are_handled_by_their_runbooks(
    runpath: RunPath, webhook: str
) -> None:
    stack, api = runpath.stack, runpath.api
    for alert, _, _ in EXPECTED.values():
        start_quiet(stack, alert, ENV)
    run = api.finish(
        DEPLOYMENT, timeout=1200, environment=ENV, faults=list(EXPECTED), fault_timeout_s=300
    )
    assert_completed(run, runpath.log)
    rows = {r["fault"]: r for r in results_of(stack, run["id"])}
    assert set(rows) == set(EXPECTED), rows
    for fault, (alert, runbook, action) in EXPECTED.items():
        row = rows[fault]
        assert (row["outcome"], row["alert"], row["runbook"]) == ("handled", alert, runbook), row
        assert (row["action"], row["asked"]) == (action, False), row
        assert 0 < row["alert_s"] <= row["mitigated_s"], row
        assert row["resolved_s"] is not None, row
    assert "3/3 handled" in oplog_row(stack, run["id"])["impact"]
