"""The phase clock backups and restores time their phases with (``tasks.phase_clock``)."""

from __future__ import annotations

import pytest

from decisions.phases import BUSY, WALL, Phase
from tasks.phase_clock import PhaseClock


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime(100.0)
    monkeypatch.setattr("tasks.phase_clock.time.monotonic", clock.monotonic)
    return clock


def test_a_span_runs_from_its_start_to_now(fake: FakeTime) -> None:
    clock = PhaseClock()
    fake.now = 101.5
    began = clock.since()
    fake.now = 104.0
    clock.span("dump", began, detail="pg_dump")
    assert clock.phases == [Phase("dump", 2.5, 1.5, WALL, "pg_dump")]


def test_a_phase_that_raises_is_still_timed(fake: FakeTime) -> None:
    clock = PhaseClock()
    with pytest.raises(RuntimeError), clock.phase("verification"):
        fake.now = 103.0
        raise RuntimeError("boom")
    assert clock.phases == [Phase("verification", 3.0, 0.0)]


def test_a_steps_phases_move_onto_the_callers_clock(fake: FakeTime) -> None:
    run = PhaseClock()
    fake.now = 102.0
    step = PhaseClock()
    step.add("checksum", 0.7, 0.5, BUSY)
    run.join(step.phases, step.origin)
    assert run.phases == [Phase("checksum", 0.7, 2.5, BUSY)]
    fake.now = 110.0
    breakdown = run.breakdown()
    assert breakdown.total_s == 10.0 and breakdown.seconds() == {"checksum": 0.7}


def test_measured_times_never_go_negative(fake: FakeTime) -> None:
    clock = PhaseClock(origin=100.0)
    clock.add("fingerprint wait", -0.001, -0.2)
    assert clock.phases == [Phase("fingerprint wait", 0.0, 0.0)]
