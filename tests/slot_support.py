"""A change that holds its slot and reaches a safe point every second, for the lease tests:
``python -m tests.slot_support <environment>`` in a subprocess whose Prefect API goes
through a fault proxy. Prints ``acquired`` once it holds the slot, then its end as JSON."""

from __future__ import annotations

import json
import sys
import time

from prefect import flow

from opsflows.errors import ChangeSlotLost
from procedures.change_slot import change_slot, check_slots
from procedures.operation import operation_log, try_load_ops_db

LIMIT_S = 240.0


@flow(name="slot-probe")
def slot_probe(environment: str) -> str:
    """Hold ``change-<environment>``; stop at the first safe point after the slot is lost."""
    with operation_log("slot probe", "lease test", try_load_ops_db()) as rec:
        with change_slot(environment, 30):
            print("acquired", flush=True)
            deadline = time.monotonic() + LIMIT_S
            while time.monotonic() < deadline:
                time.sleep(1)
                try:
                    check_slots()
                except ChangeSlotLost:
                    print(json.dumps({"stopped_at": time.time()}), flush=True)
                    raise
        rec.impact = "held the slot to the end"
        return "never stopped"


if __name__ == "__main__":
    state = slot_probe(sys.argv[1], return_state=True)
    end = {"run": str(state.state_details.flow_run_id), "type": state.type.value}
    print(json.dumps({**end, "at": time.time(), "message": state.message}), flush=True)
