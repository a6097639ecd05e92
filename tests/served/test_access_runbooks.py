"""The access audit and the access-log review started as the UI starts them (REST
``create_flow_run`` on the scheduled deployments), on both run paths, against seeded
violations (``tests/access_support.py``) that are removed again afterwards:

* the audit finds the extra superuser, the RoleBinding to an unknown user and the secret not
  rotated for 40 days, records them and pages P3, and revokes nothing;
* the log review, reading the server's log in the served process (its path from the stack's
  env, ``OPSFLOWS_POSTGRES_LOG_FILE``), finds the repeated failed logins and pages P3.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.access_support import admin, failed_logins, sink_mentions, violations
from tests.served_support import RunPath, assert_completed
from tests.support import oplog_row
from tests.triage_support import artifacts_of


def test_access_audit_finds_seeded_drift_and_revokes_nothing(runpath: RunPath) -> None:
    stack = runpath.stack
    with violations(stack) as v:
        run = runpath.api.finish("access-audit/access-audit-quarterly", timeout=180)
        assert_completed(run, runpath.log)
        row = oplog_row(stack, run["id"])
        subjects = {(f["area"], f["subject"]) for f in row["details"]["findings"]}
        assert {("postgres", v.role), ("kubernetes", f"User/{v.user}"), ("secrets", v.secret)} <= (
            subjects
        )
        assert row["impact"].startswith("no change")
        (artifact,) = artifacts_of(runpath, run["id"], "access-audit")
        assert artifact["type"] == "table" and v.role in json.dumps(artifact["data"])
        pages = sink_mentions(stack, "notify", v.marker)
        assert len(pages) == 1 and pages[0]["body"]["subject"].startswith("[P3] access audit")
        with admin(stack) as conn:  # still there: the audit revokes nothing
            found = conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (v.role,)
            ).fetchone()
        assert found == (True,)


def test_access_log_review_finds_repeated_failed_logins(runpath: RunPath) -> None:
    stack = runpath.stack
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    with violations(stack) as v:
        failed_logins(stack, v.role, 6)
        run = runpath.api.finish(
            "access-log-review/access-log-review-monthly", timeout=180, since=since
        )
        assert_completed(run, runpath.log)
        row = oplog_row(stack, run["id"])
        assert row["details"]["log_file"] == str(stack.postgres_log_file)
        assert {"kind": "repeated failures", "role": v.role, "source": "127.0.0.1", "count": 6} in (
            row["details"]["suspicious"]
        )
        (artifact,) = artifacts_of(runpath, run["id"], "access-log-review")
        assert artifact["type"] == "table" and v.role in json.dumps(artifact["data"])
        pages = sink_mentions(stack, "notify", v.role)
        assert len(pages) == 1 and "[P3] access-log review" in pages[0]["body"]["subject"]
