"""The stall decision (pure) and the watch that applies it, on a fake clock."""

from __future__ import annotations

import pytest

from decisions.stall import StallClock, judge_stall, observe
from opsflows.errors import ServiceUnavailable, Stalled
from opsflows.settings import Settings
from tasks.pipes import StallWatch


def test_silence_up_to_the_bound_is_not_a_stall_and_at_the_bound_it_is() -> None:
    clock = StallClock((10, 0), moved_at=100.0)
    assert not judge_stall(clock, 129.9, 30).stalled
    verdict = judge_stall(clock, 130.0, 30)
    assert verdict.stalled and verdict.silent_s == 30.0 and verdict.limit_s == 30
    assert verdict.describe("the dump") == "the dump made no progress for 30 s (bound 30 s)"


def test_any_counter_moving_restarts_the_clock() -> None:
    clock = observe(None, (0, 0), 0.0)
    clock = observe(clock, (0, 0), 20.0)
    assert clock.moved_at == 0.0, "same counters: still silent since 0"
    clock = observe(clock, (0, 5), 25.0)
    assert clock == StallClock((0, 5), 25.0), "one counter moved"
    assert not judge_stall(clock, 50.0, 30).stalled


def test_a_large_slow_but_moving_stream_is_never_stalled() -> None:
    clock = observe(None, (0,), 0.0)
    for minute in range(1, 600):  # ten hours, one byte a minute
        clock = observe(clock, (minute,), minute * 60.0)
        assert not judge_stall(clock, minute * 60.0 + 59, 60).stalled


def test_a_clock_going_backwards_is_no_silence_and_the_bound_must_be_positive() -> None:
    assert judge_stall(StallClock((), 100.0), 90.0, 5).silent_s == 0.0
    with pytest.raises(ValueError):
        judge_stall(StallClock((), 0.0), 1.0, 0)


def test_the_watch_raises_stalled_with_its_hint_and_busy_time_is_not_silence() -> None:
    now = [0.0]
    moved = [0]
    watch = StallWatch("the dump of x", 10, "check the server", [lambda: moved[0]], lambda: now[0])
    now[0] = 9.0
    watch.check()
    now[0] = 30.0
    watch.busy()  # the consumer uploaded a part from 9 s to 30 s
    now[0] = 39.0
    watch.check()
    moved[0] += 1
    now[0] = 48.0
    watch.check()
    now[0] = 58.0
    with pytest.raises(Stalled) as info:
        watch.check()
    assert info.value.message == "the dump of x made no progress for 10 s (bound 10 s)"
    assert info.value.hint == "check the server"
    assert isinstance(info.value, ServiceUnavailable) and info.value.transient


def test_a_lock_wait_must_end_before_the_stall_bound() -> None:
    Settings(dump_stall_s=300, pg_lock_wait_timeout_s=120)
    with pytest.raises(ValueError, match="pg_lock_wait_timeout_s"):
        Settings(dump_stall_s=60, pg_lock_wait_timeout_s=120)


def test_the_backup_restore_and_drill_flows_have_timeouts_from_the_settings() -> None:
    from flows.backup import backup_database
    from flows.restore import restore_database
    from flows.restore_drill import restore_drill

    settings = Settings()
    assert backup_database.timeout_seconds == settings.backup_timeout_s
    assert restore_database.timeout_seconds == settings.restore_timeout_s
    assert restore_drill.timeout_seconds == settings.drill_timeout_s
    assert settings.backup_timeout_s < 24 * 3600, "a hung backup ends before the next is due"
