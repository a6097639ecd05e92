"""The phase breakdown of a backup or a restore (decisions/phases.py)."""

from __future__ import annotations

import pytest

from decisions.phases import BUSY, CPU, Breakdown, Phase


def _breakdown() -> Breakdown:
    return Breakdown.of(
        [
            Phase("upload", 6.0, start_s=2.5, detail="4 parts at once"),
            Phase("dump", 5.0, start_s=2.0),
            Phase("checksum", 0.4, start_s=2.0, how=BUSY),
            Phase("zstd", 3.1, start_s=2.0, how=CPU, detail="pg_dump | zstd"),
            Phase("manifest", 0.2, start_s=8.6),
            Phase("snapshot export", 0.1, start_s=1.0),
        ],
        total_s=10.0,
    )


def test_phases_are_in_start_order_and_keyed_by_name() -> None:
    made = _breakdown()
    assert [p.name for p in made.phases][:3] == ["snapshot export", "checksum", "dump"]
    assert made.seconds()["upload"] == 6.0 and made.seconds()["zstd"] == 3.1


def test_overlapping_wall_phases_are_counted_once_and_busy_ones_not_at_all() -> None:
    # wall spans: [1.0, 1.1], [2.0, 7.0], [2.5, 8.5], [8.6, 8.8] -> 0.1 + 6.5 + 0.2 covered
    assert _breakdown().unaccounted_s() == pytest.approx(10.0 - 6.8)


def test_the_log_and_the_artifact_name_every_phase_and_what_is_outside_them() -> None:
    made = _breakdown()
    lines = made.lines()
    assert "upload: 6.00 s wall from +2.50 s (4 parts at once)" in lines
    assert lines[-1] == "total 10.00 s, of which 3.20 s outside the phases"
    table = made.markdown("backup phases")
    assert "| zstd | +2.00 | 3.10 | cpu | 31% | pg_dump \\| zstd |" in table  # a pipe escaped
    assert "| outside the phases | | 3.20 | wall | 32% |" in table


def test_a_bad_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown measure"):
        Phase("x", 1.0, how="guess")
    with pytest.raises(ValueError, match="negative"):
        Phase("x", -1.0)
