"""The stall decision (pure) and the watch that applies it, on a fake clock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from decisions.stall import StallClock, judge_stall, observe
from opsflows.errors import ServiceUnavailable, Stalled
from opsflows.settings import Settings
from tasks.pipes import StallWatch, cpu_ticks, reap, spawn, stop_all, written_bytes


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


def test_a_tool_that_does_not_exit_is_killed_with_its_group_and_reported_stalled() -> None:
    shell = spawn(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
    assert shell.stdout is not None
    helper = int(shell.stdout.readline())
    started = time.monotonic()
    with pytest.raises(Stalled, match=r"^sh did not exit within 0.5 s of the test; killed"):
        reap([shell], 0.5, "the test")
    assert time.monotonic() - started < 5
    assert shell.returncode is not None
    deadline = time.monotonic() + 5
    while _alive(helper):  # what the tool started died with its group
        assert time.monotonic() < deadline, "the tool's helper survived the kill"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_reap_returns_exit_codes_and_stop_all_is_bounded() -> None:
    tools = [spawn(["true"]), spawn(["false"])]
    assert reap(tools, 10, "the test") == [0, 1]
    stop_all(tools, 1)  # reaped already: nothing to kill
    hung = spawn(["sleep", "60"])
    stop_all([hung], 5)
    assert hung.returncode == -9


def test_progress_counters_see_output_and_cpu_and_stay_put_for_a_blocked_tool() -> None:
    busy = spawn(
        [sys.executable, "-c", "import sys; sum(range(10**7)); sys.stdout.write('x' * 5000)"],
        stdout=subprocess.PIPE,
    )
    assert busy.stdout is not None
    assert busy.stdout.read() == b"x" * 5000
    time.sleep(0.1)
    assert written_bytes(busy) >= 5000 and cpu_ticks(busy) > 0
    busy.wait()
    blocked = spawn(["sleep", "60"])
    try:
        time.sleep(0.3)
        first = (written_bytes(blocked), cpu_ticks(blocked))
        time.sleep(0.3)
        assert (written_bytes(blocked), cpu_ticks(blocked)) == first
    finally:
        stop_all([blocked], 5)
    assert written_bytes(blocked) == cpu_ticks(blocked) == 0, "gone: unknown is 0"
