"""Runbook "Monthly: rotate database passwords", through Secrets Manager's four steps.

create the new credential as AWSPENDING -> set it in PostgreSQL -> test that it logs in ->
switch the consumers (Kubernetes Secret + rollout restart, verified healthy) -> finish (move
AWSCURRENT; the old version becomes AWSPREVIOUS). Every pass re-reads the staging labels and
asks ``decisions.rotation.next_step`` what to do, so a rerun resumes where a crash stopped and
a completed rotation is a no-op. When a step fails, the run undoes what would leave AWSCURRENT
broken (``decisions.rotation.recovery``), writes a report and records the failed step in the
operation log. Secret values never reach a log line, an artifact, an exception or a parameter.
"""

# No `from __future__ import annotations`: served runs pickle the flow function by value,
# and string annotations would lose the names their parameter types need
# (tests/integration/test_served_flows.py).

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect_aws import AwsCredentials

from blocks.kube import KubeEnvironment
from blocks.postgres import PostgresTarget
from decisions.rotation import (
    CURRENT,
    PENDING,
    Observed,
    Step,
    Strategy,
    base_role,
    clone_is_linked,
    clone_role,
    grant_parity,
    next_step,
    parse_strategy,
    recovery,
    rotation_token,
    target_role,
)
from opsflows.errors import ConfigurationError, ConflictError, OpsError, VerificationFailed
from procedures.change_slot import change_slot, check_slots, require_slots
from procedures.operation import (
    APP_DB,
    APP_DB_ADMIN,
    AWS,
    OperationRecord,
    load_block,
    operation_log,
    try_load_ops_db,
)
from tasks.consumers import (
    block_matches,
    consumer_state,
    restart_consumers,
    update_database_block,
    update_secret,
    wait_for_consumers,
)
from tasks.role_pairs import create_clone, link_clone, read_pair_privileges
from tasks.rotation import (
    DbCredential,
    FinishIncomplete,
    FinishOutcomeUnknown,
    create_pending,
    finish,
    password_is_set,
    read_credential,
    read_labels,
    set_password,
    test_login,
)

OPERATION = "rotate credentials"
DEFAULT_CONSUMERS = ("staging", "production")
_MAX_PASSES = 12


class Rotation:
    """One run of the rotation: the loaded blocks, what it has seen and done so far."""

    def __init__(
        self,
        secret_id: str,
        strategy: Strategy,
        token: str,
        admin: PostgresTarget,
        aws: AwsCredentials,
        envs: list[KubeEnvironment],
        kube_secret: str,
        rollout_timeout_s: float,
        blocks: list[PostgresTarget],
    ) -> None:
        self.secret_id, self.strategy, self.token = secret_id, strategy, token
        self.admin, self.aws, self.envs, self.blocks = admin, aws, envs, blocks
        self.kube_secret, self.rollout_timeout_s = kube_secret, rollout_timeout_s
        self.current: DbCredential | None = None
        self.pending: DbCredential | None = None
        self.step: Step | None = None  # the step in progress, or the last one started
        self.phase = "prepare"  # what the run was doing, for the operation log
        self.done: list[dict[str, str]] = []
        self.logger = get_run_logger()

    def _did(self, step: str, outcome: str) -> None:
        step = str(step)  # a Step prints as its value
        self.done.append({"step": step, "outcome": outcome})
        self.logger.info("rotation %s: %s: %s", self.secret_id, step, outcome)

    def prepare(self) -> DbCredential:
        """Read AWSCURRENT, check it points at the admin's server, check the role pair."""
        current = read_credential(self.aws, self.secret_id, CURRENT)
        self.current = current
        if (current.host, current.port) != (self.admin.host, self.admin.port):
            raise ConfigurationError(
                f"secret {self.secret_id} points at {current.host}:{current.port} but the admin "
                f"block at {self.admin.host}:{self.admin.port}",
                hint="pass the admin block of the server the secret belongs to",
            )
        if self.strategy is Strategy.ALTERNATING_USERS:
            self._check_pair(current)
        return current

    def _check_pair(self, current: DbCredential) -> None:
        role, clone = base_role(current.username), clone_role(current.username)
        privs = read_pair_privileges(self.admin, current.dbname, role, clone)
        if privs[role] is None:
            raise ConfigurationError(f"role {role} of secret {self.secret_id} does not exist")
        if privs[clone] is None:
            create_clone(self.admin, current.dbname, role, clone)
            self._did("create clone role", f"{clone} created as a member of {role}, acting as it")
            privs = read_pair_privileges(self.admin, current.dbname, role, clone)
        elif not clone_is_linked(role, privs[clone] or ()):
            moved = link_clone(self.admin, current.dbname, role, clone)
            self._did("link clone role", f"{clone} now acts as {role}; {moved} objects to {role}")
            privs = read_pair_privileges(self.admin, current.dbname, role, clone)
        parity = grant_parity(role, privs[role] or (), clone, privs[clone] or ())
        if not parity.equal:
            raise VerificationFailed(
                f"grant parity: {parity.summary()}",
                hint=f"grant the missing privileges, or drop {clone} so a run recreates it",
            )
        self.logger.info("grant parity: %s", parity.summary())

    def run(self) -> dict[str, Any]:
        """Observe, decide, act until the rotation is done; then verify AWSCURRENT logs in."""
        current = self.prepare()
        target = target_role(self.strategy, current.username)
        password_ok: bool | None = None
        login_ok: bool | None = None
        consumers_ok: bool | None = None
        for _ in range(_MAX_PASSES):
            labels = read_labels(self.aws, self.secret_id)
            if PENDING in (labels.labels_of(self.token) or ()):
                if self.pending is None:
                    self.pending = self._read_pending(target)
                if not password_ok:
                    password_ok = password_is_set(self.admin, self.pending)
                if login_ok and consumers_ok is None:
                    pending = self.pending
                    consumers_ok = all(
                        consumer_state(env, self.kube_secret, pending).switched for env in self.envs
                    ) and all(block_matches(block, pending) for block in self.blocks)
            decision = next_step(Observed(labels, self.token, password_ok, login_ok, consumers_ok))
            self.logger.info("next step: %s (%s)", decision.step.value, decision.reason)
            if decision.step is Step.DONE:
                self._did("done", decision.reason)
                break
            if decision.step is Step.ABORT:
                raise VerificationFailed(decision.reason)
            self.step = decision.step
            self.phase = decision.step.value
            if decision.step is Step.CREATE_PENDING:
                create_pending(self.aws, self.secret_id, self.token, current, target)
                self._did(decision.step, f"version {self.token} for role {target}")
            elif decision.step is Step.SET_PASSWORD:
                assert self.pending is not None
                set_password(self.admin, self.pending)
                password_ok = None
                self._did(decision.step, f"role {target}")
            elif decision.step is Step.TEST:
                assert self.pending is not None
                test_login(self.pending)
                login_ok = True
                self._did(decision.step, f"{target} logs in (scram-sha-256 over TCP)")
            elif decision.step is Step.SWITCH_CONSUMERS:
                assert self.pending is not None
                self.switch(self.pending)
                consumers_ok = None
            elif decision.step is Step.FINISH:
                moved = finish(self.aws, self.secret_id, self.token)
                self._did(decision.step, f"AWSCURRENT {moved['previous']} -> {moved['current']}")
        else:
            raise VerificationFailed(f"rotation did not converge in {_MAX_PASSES} passes")
        self.phase = "verify"
        final = read_credential(self.aws, self.secret_id, CURRENT)
        test_login(final)
        self._did("verify", f"AWSCURRENT ({final.describe()}) logs in")
        return {
            "secret": self.secret_id,
            "strategy": self.strategy.value,
            "current_version": final.version_id,
            "role": final.username,
            "steps": [d["step"] for d in self.done],
        }

    def _read_pending(self, target: str) -> DbCredential:
        pending = read_credential(self.aws, self.secret_id, PENDING, self.token)
        if pending.username != target:
            raise ConflictError(
                f"the pending version {self.token} is for role {pending.username}, but the "
                f"{self.strategy.value} strategy targets {target}",
                hint="rerun with the strategy this rotation started with",
            )
        return pending

    def switch(self, cred: DbCredential, only_from: str | None = None) -> None:
        """Point every consumer at ``cred``: Secret, rollout restart, wait, verify pods."""
        for env in self.envs:
            with change_slot(env.environment, 600):
                wrote = update_secret(env, self.kube_secret, cred)
                check_slots()
                restarted = restart_consumers(env, self.kube_secret, cred.version_id, only_from)
                names = restarted if only_from is not None else None
                ready = wait_for_consumers(
                    env, self.kube_secret, cred.version_id, self.rollout_timeout_s, names
                )
            self._did(
                f"{Step.SWITCH_CONSUMERS.value} {env.environment}",
                f"secret {self.kube_secret} {wrote}; restarted {', '.join(restarted) or 'none'};"
                f" {len(ready)} deployment(s) healthy on version {cred.version_id}",
            )
        for block in self.blocks:
            done = update_database_block(block, cred)
            self._did(f"{Step.SWITCH_CONSUMERS.value} block", f"{block.describe()} {done}")

    def recover(self, exc: BaseException, rec: OperationRecord) -> None:
        """Undo what would leave AWSCURRENT broken, and say so in the operation record."""
        failed = self.step
        rec.details["failed_step"] = self.phase
        rec.issues.append(f"step {self.phase} failed")
        if self.phase == "verify":
            rec.follow_up.append("the rotation finished but AWSCURRENT did not log in: check it")
            return
        if failed is None or self.current is None:
            rec.follow_up.append("fix the cause and rerun; the credential was not changed")
            return
        moved: bool | None = False
        if failed is Step.FINISH:
            moved = self._current_moved(exc)
        plan = recovery(self.strategy, failed, moved)
        self._did("recovery plan", plan.reason)
        current = self.current
        if plan.restore_password:
            self._attempt(rec, "restore password", lambda: set_password(self.admin, current))
        if plan.restore_consumers and self.pending is not None:
            pending_id = self.pending.version_id
            self._attempt(rec, "restore consumers", lambda: self.switch(current, pending_id))
        self._verify_after(rec, moved)
        rec.follow_up.append(
            f"rerun the rotation (same rotation_id) to resume at {failed.value}; {plan.reason}"
        )

    def _verify_after(self, rec: OperationRecord, moved: bool | None) -> None:
        """Log in with AWSCURRENT as Secrets Manager now names it (or as it last did)."""
        assert self.current is not None
        try:
            cred = read_credential.with_options(retries=0)(self.aws, self.secret_id, CURRENT)
            what = "AWSCURRENT"
        except OpsError:
            moved_to_pending = moved is not False and self.pending is not None
            cred = self.pending if moved_to_pending and self.pending else self.current
            what = f"version {cred.version_id} (Secrets Manager unreadable)"
        self._attempt(rec, f"verify {what} logs in", lambda: test_login(cred))

    def _current_moved(self, exc: BaseException) -> bool | None:
        """Whether AWSCURRENT names this rotation's version after ``finish`` raised ``exc``."""
        try:
            labels = read_labels.with_options(retries=0)(self.aws, self.secret_id)
        except OpsError:
            if isinstance(exc, FinishIncomplete):
                return True
            if isinstance(exc, FinishOutcomeUnknown) or not isinstance(exc, OpsError):
                return None
            return False  # FinishNotApplied, or refused before anything moved
        return labels.current == self.token

    def _attempt(self, rec: OperationRecord, what: str, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - report every recovery failure, keep going
            rec.issues.append(f"{what} failed: {type(exc).__name__}: {exc}")
            self.logger.error("%s failed: %s", what, exc)
        else:
            self._did(what, "ok")

    def report(self, status: str) -> None:
        """The run's steps as a markdown artifact (ids, roles and outcomes only)."""
        rows = "\n".join(f"| {d['step']} | {d['outcome']} |" for d in self.done)
        create_markdown_artifact(
            key="rotation-report",
            markdown=(
                f"# Rotation of `{self.secret_id}`: {status}\n\n"
                f"strategy {self.strategy.value}, version {self.token}\n\n"
                f"| step | outcome |\n|---|---|\n{rows}\n"
            ),
            description=f"Credential rotation {status}",
        )


@flow(name="rotate-credentials")
def rotate_credentials(
    secret_id: str = "opsflows/app/db",
    admin_database: str = APP_DB_ADMIN,
    aws_credentials: str = AWS,
    strategy: str = "alternating_users",
    consumers: list[str] | None = None,
    kube_secret_name: str = "web-app-db",
    database_blocks: list[str] | None = None,
    rotation_id: str = "",
    reason: str = "monthly credential rotation",
    rollout_timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Rotate a database credential kept in Secrets Manager and switch its consumers.

    Resumable: rerunning the same rotation continues at the step a crash interrupted, and
    rerunning a completed one changes nothing. A failed run leaves AWSCURRENT working and names
    the failed step in the operation log.

    Args:
        secret_id: Secrets Manager id of the JSON credential (host, port, dbname, username,
            password).
        admin_database: PostgresTarget block of a role allowed to ALTER ROLE on that server.
        aws_credentials: AwsCredentials block for Secrets Manager.
        strategy: ``alternating_users`` (the default: give the new password to
            ``<user>``/``<user>_clone``, whichever AWSCURRENT does not use, so the credential
            in use keeps logging in; the clone is created on the first run) or ``single_user``
            (change the role's password in place: new logins with the old password are
            refused from ``set_password`` until every consumer is switched; see README).
        consumers: KubeEnvironment blocks whose Kubernetes Secret carries the credential
            (default staging and production).
        kube_secret_name: Name of that Kubernetes Secret; Deployments that use it are restarted.
        database_blocks: PostgresTarget blocks that log in with this credential (default
            app-db, which the backup and migration runbooks use); switched like consumers.
        rotation_id: Names the rotation (default: the current month, UTC); the same id always
            means the same rotation.
        reason: Why the rotation runs (operation log).
        rollout_timeout_s: How long each consumer rollout may take.
    """
    names = list(consumers) if consumers is not None else list(DEFAULT_CONSUMERS)
    block_names = list(database_blocks) if database_blocks is not None else [APP_DB]
    with operation_log(OPERATION, reason, try_load_ops_db()) as rec:
        strat = parse_strategy(strategy)
        label = rotation_id or datetime.now(UTC).strftime("%Y-%m")
        token = rotation_token(secret_id, label)
        if not kube_secret_name:
            raise ConfigurationError("kube_secret_name is empty")
        admin = load_block(PostgresTarget, admin_database)
        aws = load_block(AwsCredentials, aws_credentials)
        envs = [load_block(KubeEnvironment, name) for name in names]
        require_slots(*(env.environment for env in envs))  # before any side effect
        blocks = [load_block(PostgresTarget, name) for name in block_names]
        rec.details.update(
            secret=secret_id,
            strategy=strat.value,
            rotation=label,
            version=token,
            consumers=", ".join(names) or "none",
            database_blocks=", ".join(block_names) or "none",
        )
        rotation = Rotation(
            secret_id, strat, token, admin, aws, envs, kube_secret_name, rollout_timeout_s, blocks
        )
        try:
            result = rotation.run()
        except BaseException as exc:
            rotation.recover(exc, rec)
            rotation.report("failed")
            raise
        rotation.report("succeeded")
        rec.details["steps"] = " -> ".join(result["steps"])
        if result["steps"] == ["done", "verify"]:
            rec.impact = "no change: this rotation was already complete"
            rec.follow_up.append(f"to rotate again, run with a rotation_id other than {label!r}")
        else:
            rec.impact = f"AWSCURRENT is now version {result['current_version']} ({result['role']})"
        return result
