"""Deploy decisions: image references, rollout verdicts, smoke and bake judgements, the gate.

Everything here is a pure function on frozen dataclasses: the tasks read the cluster, the
service and Prometheus and hand the values in; the flows act on what comes out. The smoke
and bake judgements live in :mod:`decisions.deploy_verify` and are re-exported here, so
``decisions.deploy`` is the one import for deploy decisions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from decisions.deploy_verify import (
    DEFAULT_SMOKE_CHECKS,
    FAIL,
    INCONCLUSIVE,
    PASS,
    BakeSample,
    BakeThresholds,
    HttpObservation,
    Judged,
    Measurement,
    SmokeCheck,
    SmokeResult,
    Verdict,
    bake_verdict,
    evaluate_smoke,
    judge,
    judge_sample,
    validate_smoke_checks,
    worst,
)
from opsflows.errors import ConfigurationError

__all__ = [
    "DEFAULT_SMOKE_CHECKS",
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "Approval",
    "BakeSample",
    "BakeThresholds",
    "Check",
    "GateDecision",
    "HttpObservation",
    "ImageRef",
    "Judged",
    "Measurement",
    "PodState",
    "RolloutStatus",
    "RolloutVerdict",
    "SmokeCheck",
    "SmokeResult",
    "Verdict",
    "approval_decision",
    "bake_verdict",
    "check",
    "check_replicas",
    "evaluate_smoke",
    "judge",
    "judge_sample",
    "parse_image",
    "promotion_gate",
    "require_policy",
    "rollout_verdict",
    "rules_for_app",
    "undo_revision",
    "validate_smoke_checks",
    "worst",
]

POLICIES = ("auto", "manual")

# -- image references ---------------------------------------------------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+|[a-zA-Z0-9-]+:\d+|"
    r"[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+:\d+)"
)
_IMAGE = re.compile(
    rf"^(?:(?P<registry>{_DOMAIN})/)?(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


@dataclass(frozen=True)
class ImageRef:
    """A parsed container image reference that is safe to deploy (pinned, not ``latest``)."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}" if self.registry else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(reference: str) -> ImageRef:
    """Validate an image reference (Docker's grammar) and require a pinned tag or digest.

    Raises:
        ConfigurationError: the reference is malformed, or floats (no tag, or ``latest``).
    """
    text = reference.strip() if isinstance(reference, str) else ""
    hint = "use registry/repository:tag (e.g. registry.local/web-app:1.2.0) or @sha256:<digest>"
    if not text or len(text) > 255 or text != reference:
        raise ConfigurationError(f"image reference {reference!r} is not valid", hint=hint)
    match = _IMAGE.match(text)
    if match is None:
        raise ConfigurationError(f"image reference {reference!r} is not valid", hint=hint)
    ref = ImageRef(
        registry=match["registry"] or "",
        repository=match["repository"],
        tag=match["tag"],
        digest=match["digest"],
    )
    if ref.digest is None and ref.tag in (None, "latest"):
        raise ConfigurationError(
            f"image reference {reference!r} is not pinned (no tag, or 'latest')",
            hint="deploy an explicit version tag or digest so a rollback knows what it returns to",
        )
    return ref


def require_policy(policy: str) -> str:
    """The promotion policy, validated (``auto`` or ``manual``)."""
    if policy not in POLICIES:
        raise ConfigurationError(f"unknown promotion policy {policy!r}", hint="use auto or manual")
    return policy


# -- rollout status ------------------------------------------------------------------------

FAIL_FAST_REASONS = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"}
)
TIMED_OUT_REASON = "ProgressDeadlineExceeded"


@dataclass(frozen=True)
class PodState:
    """One pod of the new ReplicaSet, as the kubelet reports it."""

    name: str
    ready: bool
    restarts: int = 0
    waiting_reason: str | None = None
    waiting_message: str = ""


@dataclass(frozen=True)
class RolloutStatus:
    """The Deployment fields ``kubectl rollout status`` reads, plus the new pods."""

    generation: int
    observed_generation: int
    desired: int
    replicas: int
    updated: int
    available: int
    ready: int = 0
    progressing_reason: str | None = None
    progressing_message: str = ""
    pods: tuple[PodState, ...] = ()


@dataclass(frozen=True)
class RolloutVerdict:
    """``done``, ``waiting`` (poll again) or ``failed`` (stop now), and why."""

    state: Literal["done", "waiting", "failed"]
    message: str
    reason: str | None = None

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def failed(self) -> bool:
        return self.state == "failed"


def rollout_verdict(status: RolloutStatus, fail_fast: bool = True) -> RolloutVerdict:
    """Judge a rollout as ``kubectl rollout status`` does, but fail fast on broken pods.

    A pod of the new ReplicaSet waiting with CrashLoopBackOff, ImagePullBackOff, ErrImagePull
    or CreateContainerConfigError will not recover by waiting, so the rollout fails at once
    instead of at the progress deadline (``fail_fast=False`` waits for the deadline, as
    kubectl does).
    """
    for pod in status.pods if fail_fast else ():
        if pod.waiting_reason in FAIL_FAST_REASONS:
            detail = f": {pod.waiting_message}" if pod.waiting_message else ""
            return RolloutVerdict(
                "failed", f"pod {pod.name} is {pod.waiting_reason}{detail}", pod.waiting_reason
            )
    if status.observed_generation < status.generation:
        return RolloutVerdict("waiting", "waiting for the deployment spec update to be observed")
    if status.progressing_reason == TIMED_OUT_REASON:
        return RolloutVerdict(
            "failed",
            f"exceeded its progress deadline: {status.progressing_message}".rstrip(": "),
            TIMED_OUT_REASON,
        )
    if status.updated < status.desired:
        return RolloutVerdict(
            "waiting", f"{status.updated} of {status.desired} new replicas have been updated"
        )
    if status.replicas > status.updated:
        old = status.replicas - status.updated
        return RolloutVerdict("waiting", f"{old} old replicas are pending termination")
    if status.available < status.updated:
        return RolloutVerdict(
            "waiting", f"{status.available} of {status.updated} updated replicas are available"
        )
    return RolloutVerdict("done", "successfully rolled out")


@dataclass(frozen=True)
class Check:
    """A yes/no check (a preflight item, a rollout) with what was seen."""

    name: str
    verdict: Verdict
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == PASS


def check(name: str, ok: bool, detail: str = "") -> Check:
    """A passed or failed :class:`Check`."""
    return Check(name, PASS if ok else FAIL, detail)


def rules_for_app(rule_names: Sequence[str], app: str) -> tuple[str, ...]:
    """The alert rules whose name mentions ``app`` (``WebAppHighErrorRate`` for ``web-app``)."""
    wanted = re.sub(r"[^a-z0-9]", "", app.lower())
    return tuple(n for n in rule_names if wanted and wanted in re.sub(r"[^a-z0-9]", "", n.lower()))


# -- the promotion gate -----------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    """``promote``, ``ask`` (a person decides) or ``reject``, with the reasons."""

    action: Literal["promote", "ask", "reject"]
    reasons: tuple[str, ...] = ()
    #: Rejected because nobody answered in time (the run ends "timed out", not "rejected").
    timed_out: bool = False


def promotion_gate(
    smoke: Sequence[Judged], verification: Sequence[Judged], policy: str
) -> GateDecision:
    """Decide promotion from staging's smoke and verification results and the policy.

    Anything failed or inconclusive rejects, whatever the policy; no evidence at all rejects.
    With everything passed, ``auto`` promotes and ``manual`` asks a person.
    """
    require_policy(policy)
    judged = [*smoke, *verification]
    if not smoke:
        return GateDecision("reject", ("no smoke check was run",))
    bad = tuple(f"{item.name}: {item.verdict}" for item in judged if item.verdict != PASS)
    if bad:
        return GateDecision("reject", bad)
    if policy == "manual":
        return GateDecision("ask", (f"all {len(judged)} checks passed; policy asks a person",))
    return GateDecision("promote", (f"all {len(judged)} checks passed",))


@dataclass(frozen=True)
class Approval:
    """What a person answered in the approval form."""

    approve: bool
    approver: str
    reason: str


def approval_decision(approval: Approval | None) -> GateDecision:
    """A person's answer as a gate decision; no answer (timeout) or no name rejects."""
    if approval is None:
        return GateDecision("reject", ("approval timed out",), timed_out=True)
    if not approval.approver.strip():
        return GateDecision("reject", ("the approval form names no approver",))
    who = f"{approval.approver}: {approval.reason or 'no reason given'}"
    if not approval.approve:
        return GateDecision("reject", (f"rejected by {who}",))
    return GateDecision("promote", (f"approved by {who}",))


# -- revisions and replicas -------------------------------------------------------------------


def undo_revision(revisions: Sequence[int], current: int, wanted: int | None) -> int:
    """The revision ``kubectl rollout undo [--to-revision]`` goes to.

    Without ``wanted`` it is the newest revision older than ``current``.

    Raises:
        ConfigurationError: the revision is not in the history (or there is no earlier one).
    """
    known = sorted(set(revisions))
    if wanted is not None:
        if wanted not in known:
            raise ConfigurationError(
                f"revision {wanted} is not in the rollout history {known}",
                hint="pick one of the recorded revisions",
            )
        return wanted
    earlier = [r for r in known if r < current]
    if not earlier:
        raise ConfigurationError(
            f"no revision before {current} in the rollout history {known}",
            hint="there is nothing to roll back to",
        )
    return earlier[-1]


def check_replicas(replicas: int, max_replicas: int) -> int:
    """A replica count within policy (1..``max_replicas``)."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigurationError(f"replicas must be a whole number >= 1, got {replicas!r}")
    if replicas > max_replicas:
        raise ConfigurationError(
            f"{replicas} replicas is above the policy maximum of {max_replicas}",
            hint="raise max_replicas in the KubeEnvironment block if this is intended",
        )
    return replicas
