"""A minimal runbook for the operation-log fault tests: run in a subprocess whose Prefect API
goes through a fault proxy (``python -m tests.oplog_support <fail> <ops-db block>``)."""

from __future__ import annotations

import json
import sys

from prefect import flow

from opsflows.errors import ConflictError
from procedures.operation import operation_log, try_load_ops_db

REAL_ERROR = "the procedure's own failure"


@flow(name="oplog-probe")
def oplog_probe(fail: bool, ops_db: str) -> dict[str, bool]:
    """Change nothing, record an impact, then succeed or fail with :data:`REAL_ERROR`."""
    with operation_log("oplog probe", "fault test", try_load_ops_db(ops_db)) as rec:
        rec.impact = "probe only"
        if fail:
            raise ConflictError(REAL_ERROR)
        return {"ok": True}


if __name__ == "__main__":
    state = oplog_probe(sys.argv[1] == "fail", sys.argv[2], return_state=True)
    print(json.dumps({"run": str(state.state_details.flow_run_id), "type": state.type.value}))
