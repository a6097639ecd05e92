"""Write the operation-log entry of a crashed run (started by a deployment trigger).

A run whose process died (``kill -9``, out of memory, a lost machine) never reaches the
``finally`` that writes its entry. When Prefect marks it Crashed (the "crash unresponsive
runs" automation, or the runner noticing its process exited), the ``record-crashed-run``
deployment's trigger starts this flow with the run's id; it writes the entry the run could
not, with status ``crashed``, unless the run left its own (the ``ops_log`` table allows one
entry per run).
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from decisions.crashed_runs import crash_entry, run_id_from
from procedures.operation import OPS_DB, operation_log, record_entry, try_load_ops_db
from tasks.flow_runs import read_run_facts
from tasks.oplog import entry_exists


@flow(name="record-crashed-run")
def record_crashed_run(flow_run_id: str, ops_db: str = OPS_DB) -> dict[str, Any]:
    """Write the operation-log entry of a crashed flow run (once; never a second one).

    Args:
        flow_run_id: The crashed run's id (or its event resource id ``prefect.flow-run.<id>``).
        ops_db: PostgresTarget block of the operations database.
    """
    run_id = run_id_from(flow_run_id)
    target = try_load_ops_db(ops_db)
    with operation_log("record crashed run", f"flow run {run_id} crashed", target) as rec:
        facts = read_run_facts(run_id)
        rec.details.update(crashed_run=run_id, flow=facts.flow_name, state=facts.state_type)
        if facts.state_type != "CRASHED":
            rec.impact = f"none: run {facts.name} is {facts.state_type}, not crashed"
            return {"written": False, "why": rec.impact}
        if target is not None and entry_exists(target, run_id):
            rec.impact = f"none: run {facts.name} had already written its entry"
            return {"written": False, "why": rec.impact}
        record_entry(crash_entry(facts, datetime.now(UTC)), target)
        rec.impact = f"operation-log entry written for crashed run {facts.name}"
        return {"written": True, "flow": facts.flow_name, "run": facts.name}
