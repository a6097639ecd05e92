"""The forkserver's warm-up: a run forked after it imports nothing and builds no model.

A fresh interpreter stands in for the forkserver: it imports ``deployments.serve.PRELOAD``
(or, as the control, only Prefect), then runs a flow with a task, a log line and an artifact
against the stack's Prefect server, and reports what that first run still did on its clock.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.support import child_report

CHILD = r"""
import gc, importlib, json, sys, threading
from pydantic import BaseModel

preload = json.loads(sys.argv[1])
for module in preload:
    importlib.import_module(module)
threads = threading.active_count()
frozen, collected = gc.get_freeze_count(), len(gc.get_objects())

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact


def incomplete():
    found, todo = set(), [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if not getattr(sub, "__pydantic_complete__", True):
                found.add(f"{sub.__module__}.{sub.__qualname__}")
    return found


@task
def step(n: int) -> int:
    get_run_logger().info("step %d", n)
    create_markdown_artifact("probe", key="warmup-probe")
    return n + 1


@flow(name="warmup-probe")
def probe(n: int = 1) -> int:
    return step(n)


modules, models = set(sys.modules), incomplete()
assert probe(1) == 2
print(json.dumps({
    "threads": threads,
    "frozen": frozen,
    "collected": collected,
    "imported": sorted(set(sys.modules) - modules),
    "built": sorted(models - incomplete()),
}))
"""


def _first_run(stack: Any, preload: list[str]) -> dict[str, Any]:
    env = {
        **os.environ,
        "PREFECT_API_URL": stack.prefect_api_url,
        "PREFECT_API_AUTH_STRING": stack.prefect_auth_string,
    }
    report: dict[str, Any] = child_report(["-c", CHILD, json.dumps(preload)], env=env)
    return report


@pytest.fixture(scope="module")
def cold(stack: Any) -> dict[str, Any]:
    return _first_run(stack, ["prefect"])


@pytest.fixture(scope="module")
def warm(stack: Any) -> dict[str, Any]:
    from deployments.serve import PRELOAD

    return _first_run(stack, list(PRELOAD))


def test_a_cold_first_run_imports_modules_and_builds_models(cold: dict[str, Any]) -> None:
    """The control: what the warm-up takes off a run's clock exists."""
    assert cold["imported"], "a cold first run imported nothing: the warm-up has no work"
    assert cold["built"], "a cold first run built no pydantic model"


def test_a_run_after_the_preload_imports_nothing(warm: dict[str, Any]) -> None:
    assert warm["imported"] == [], "add these to deployments.run_warmup.LAZY_IMPORTS: " + ", ".join(
        warm["imported"]
    )


def test_a_run_after_the_preload_builds_no_model(warm: dict[str, Any]) -> None:
    assert warm["built"] == []


def test_the_preloaded_heap_is_out_of_the_collectors_way(
    cold: dict[str, Any], warm: dict[str, Any]
) -> None:
    """A run's full collections scan only what the run made, not the preloaded heap."""
    assert cold["frozen"] == 0
    assert warm["frozen"] > 100_000
    assert warm["collected"] < warm["frozen"] / 100


def test_the_preload_starts_no_thread(warm: dict[str, Any]) -> None:
    """The forkserver forks every run: a thread started by the preload would not survive it."""
    assert warm["threads"] == 1
