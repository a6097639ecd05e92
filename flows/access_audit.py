"""Access audit runbook (quarterly): who has access, against who should.

RUNBOOK.md "Regular Security Tasks": *Quarterly: audit who has production access*. Reads the
PostgreSQL server's roles (attributes, memberships, privileges on the app database, password
age), the cluster's RBAC (ServiceAccounts, RoleBindings, ClusterRoleBindings), the Secrets
Manager secrets' rotation dates and the Prefect blocks that hold credentials (names and types,
never values); compares them with ``policy/roles.yaml``; reports the drift as the
``access-audit`` table artifact, in the operation log and, when there is any, as a P3
notification. It revokes nothing: revoking is a separate, approved change.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value.

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect_aws import AwsCredentials

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.access_audit import AccessFacts, audit, password_ages
from procedures.access_review import NOT_REVOKED, load_audit_policy, publish_findings
from procedures.operation import (
    APP_DB_ADMIN,
    AWS,
    ROUTING,
    load_block,
    operation_log,
    safe_notify,
    try_load_ops_db,
    try_load_routing,
)
from tasks.access_facts import read_credential_blocks, read_pg_roles, read_secret_ages
from tasks.rbac import read_rbac


@flow(name="access-audit")
def access_audit(
    database: str = APP_DB_ADMIN,
    cluster: str = "production",
    aws_credentials: str = AWS,
    routing: str = ROUTING,
) -> dict[str, Any]:
    """Audit PostgreSQL roles, Kubernetes RBAC, secrets and credential blocks against the
    roles policy; report drift (table artifact, op log, P3). Revokes nothing.

    Args:
        database: PostgresTarget block of a superuser on the app's database: the server whose
            roles are audited, and the database whose grants are listed.
        cluster: KubeEnvironment block whose API server's RBAC is audited (every namespace).
        aws_credentials: AwsCredentials block of the account whose secrets are audited.
        routing: NotificationRouting block; drift goes out as P3.
    """
    ops_db, routes = try_load_ops_db(), try_load_routing(routing)
    with operation_log("access audit", "quarterly access audit", ops_db, routes) as rec:
        policy, expect = load_audit_policy()
        admin = load_block(PostgresTarget, database)
        kube = load_block(KubeEnvironment, cluster)
        credentials = load_block(AwsCredentials, aws_credentials)
        facts = AccessFacts(
            pg_roles=read_pg_roles(admin),
            rbac=read_rbac(kube),
            secrets=read_secret_ages(credentials),
            blocks=read_credential_blocks(),
        )
        now = datetime.now(UTC)
        findings = audit(facts, expect, policy, now)
        publish_findings(findings, facts, now)
        rec.impact = "no change (read-only audit; nothing revoked)"
        rec.details.update(
            findings=[
                {"area": f.area, "subject": f.subject, "drift": f.problem, "evidence": f.evidence}
                for f in findings
            ],
            login_roles=sorted(r.name for r in facts.pg_roles if r.login),
            password_age=password_ages(facts, expect, now),
            bindings=len(facts.rbac.bindings),
            secrets=len(facts.secrets),
            credential_blocks=[b.ref for b in facts.blocks],
        )
        if findings:
            rec.issues.extend(f"{f.area}: {f.subject}: {f.problem}" for f in findings)
            rec.follow_up.append(
                "review the access-audit findings; revoke what is not needed by an approved "
                "change (the audit revoked nothing)"
            )
            lines = "\n".join(f"- {f.area}: {f.subject}: {f.problem}" for f in findings[:20])
            more = f"\n… and {len(findings) - 20} more" if len(findings) > 20 else ""
            rec.details["notified"] = safe_notify(
                "P3",
                f"access audit: {len(findings)} finding(s) of drift",
                f"The quarterly access audit found access the roles policy does not "
                f"expect:\n{lines}{more}\n\nSee the access-audit artifact. {NOT_REVOKED}",
            )
        return {"findings": len(findings), "clean": not findings}
