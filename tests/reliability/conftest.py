"""Fixtures shared by the reliability tests (rotation: each test gets its own world), and the
tier's own ledger: every test's injected faults and whether it lost data (tests/safety_support.py).

Around every test the stack's data is read (databases, complete backups, rows of the shared
databases) before and after; the terminal summary reports the faults injected and what was
lost, and a loss fails the session. A snapshot that cannot be taken when the test ends (a
service down on purpose) is taken again once the test's teardown is done; one that still
cannot be taken is reported as not measured.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Generator, Iterator

import pytest

from devstack.stack import StackInfo
from tests import safety_support as safety
from tests.rotation_support import World

LEDGER = safety.Ledger()
#: A test whose after-snapshot failed: its record, the snapshot before it, the one taken when
#: its module began (what existed before the module's own fixtures made anything), the stack.
Pending = tuple[safety.Record, safety.Snapshot, safety.Snapshot | None, StackInfo]
_PENDING = pytest.StashKey[Pending]()
RETRY_S = 30.0


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


@pytest.fixture
def world(stack: StackInfo, bootstrapped: object) -> Iterator[World]:
    w = World(stack).create()
    yield w
    w.remove()


@pytest.fixture(scope="module", autouse=True)
def _existing_data(stack: StackInfo) -> safety.Snapshot | None:
    """The data before this module's fixtures made anything (autouse: set up first)."""
    try:
        return safety.take(stack)
    except Exception:  # noqa: BLE001 - the ledger measures, it never breaks a test
        return None


@pytest.fixture(autouse=True)
def _data_safety(
    request: pytest.FixtureRequest, stack: StackInfo, _existing_data: safety.Snapshot | None
) -> Iterator[None]:
    """Count the test's faults and compare the data before and after it (autouse: set up
    first and torn down last of the test's own fixtures, so what they make is not 'before')."""
    record = safety.Record(request.node.nodeid)
    LEDGER.records.append(record)
    faults_before, sim_before = safety.fault_totals(stack)
    before: safety.Snapshot | None = None
    try:
        before = safety.take(stack)
    except Exception as exc:  # noqa: BLE001
        record.why = f"no snapshot before the test ({_error(exc)})"
    yield
    faults_after, sim_after = safety.fault_totals(stack)
    record.faults = safety.difference(faults_before, faults_after)
    if not (sim_before and sim_after):  # a one-sided read would count its whole history
        record.faults = Counter({k: n for k, n in record.faults.items() if k[:5] != "kube "})
    if before is None:
        return
    try:
        record.loss = safety.lost(before, safety.take(stack))
    except Exception:  # noqa: BLE001 - measured again once the teardown is done
        request.node.stash[_PENDING] = (record, before, _existing_data, stack)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    try:
        yield
    finally:
        pending = item.stash.get(_PENDING, None)
        if pending is not None:
            _measure_late(*pending)


def _measure_late(
    record: safety.Record,
    before: safety.Snapshot,
    existed: safety.Snapshot | None,
    stack: StackInfo,
) -> None:
    """The after-snapshot, once the services are back (a bounded wait on them)."""
    if existed is None:
        record.why = "no snapshot after the test, nor of the data before its module"
        return
    deadline = time.monotonic() + RETRY_S
    while True:
        try:
            after = safety.take(stack)
        except Exception as exc:  # noqa: BLE001
            if time.monotonic() > deadline:
                record.why = f"no snapshot after the test within {RETRY_S:g} s ({_error(exc)})"
                return
            time.sleep(0.5)
            continue
        # The module's own fixtures may be gone by now: only data older than them counts.
        record.loss = safety.lost(before, after, existed)
        return


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if LEDGER.lost and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGER.records:
        return
    terminalreporter.section("reliability: faults injected and data kept")
    for line in LEDGER.summary():
        terminalreporter.write_line(line, red=bool(LEDGER.lost), bold=line.startswith("reli"))
