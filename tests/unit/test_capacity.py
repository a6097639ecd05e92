"""Capacity planning's pure parts: trends, forecasts, advice, the report's rows, the synthetic
history the demo stack is backfilled with, and the chart (decisions/capacity*.py,
devstack/backfill.py, tasks/capacity_charts.py)."""

from __future__ import annotations

import random

import pytest

from decisions.capacity import (
    DAY_S,
    RESOURCES,
    Trend,
    assess,
    days_to_cross,
    fit_trend,
    fmt,
    window,
)
from devstack.backfill import HEAD_GAP_S, INSTANCE, Profile, render_openmetrics

NOW = 1_800_000_000.0
GIB = 2**30


def hourly(value_at, days: int = 30) -> list[tuple[float, float]]:
    """Hourly samples over ``days`` ending now; ``value_at(day)`` with day <= 0."""
    return [(NOW + h * 3600.0, value_at(h / 24)) for h in range(-days * 24, 1)]


def test_disk_growing_1_percent_a_day_from_60_crosses_80_in_20_days() -> None:
    a = assess(
        RESOURCES["disk"],
        hourly(lambda d: 0.60 + 0.01 * d),
        NOW,
        None,
        1.0,
        {"volume_bytes": 10 * GIB},
    )
    assert a.days == pytest.approx(20, abs=0.1)
    assert a.forecast == "crosses 80% in 20 days"
    # 90 days at 1%/day: 150% of today's 10 GiB is used then; 80% of the new size is that
    assert "grow the volume by 8.8 GiB" in a.advice and "18.8 GiB" in a.advice
    assert a.trend_7d is not None and a.trend_7d.slope_per_day == pytest.approx(0.01)


def test_theil_sen_ignores_outliers_and_a_short_step_at_the_end() -> None:
    rng = random.Random(3)
    samples = hourly(lambda d: 0.5 + 0.01 * d + rng.gauss(0, 0.01))
    # spikes (a deploy, a batch job) and the last 3 hours at 0 (live series after a backfill)
    samples = [(t, 1.0 if i % 50 == 0 else v) for i, (t, v) in enumerate(samples)]
    samples[-3:] = [(t, 0.0) for t, _ in samples[-3:]]
    trend = fit_trend(samples, NOW)
    assert trend is not None
    assert trend.slope_per_day == pytest.approx(0.01, rel=0.1)
    assert trend.at_now == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("slope", [0.0, -0.005, 1e-6])
def test_flat_or_falling_is_not_within_90_days(slope: float) -> None:
    a = assess(RESOURCES["memory"], hourly(lambda d: 0.6 + slope * d), NOW, None, 1.0)
    assert a.days is None
    assert a.forecast == "not within 90 days"
    assert a.advice.startswith("no action within 90 days")


def test_growth_crossing_after_the_horizon_is_not_within_90_days() -> None:
    trend = Trend(slope_per_day=0.001, at_now=0.5, points=100)
    assert days_to_cross(trend, 0.8) is None  # 300 days
    assert days_to_cross(trend, 0.8, horizon=400) == pytest.approx(300)


def test_above_the_threshold_now_is_zero_days_whatever_the_trend() -> None:
    a = assess(RESOURCES["cpu"], hourly(lambda d: 0.9 - 0.001 * d), NOW, 0.9, 1.0, {"replicas": 3})
    assert a.days == 0 and a.forecast == "above the threshold now"
    # 3 replicas at 90%: 0.9 * 3 / 0.8 = 3.4 -> 4
    assert "add 1 replicas now (3 -> 4)" in a.advice


def test_cpu_advice_sizes_replicas_for_the_load_in_90_days() -> None:
    a = assess(RESOURCES["cpu"], hourly(lambda d: 0.5 + 0.01 * d), NOW, 0.5, 1.0, {"replicas": 2})
    assert a.days == pytest.approx(30, abs=0.1)
    # in 90 days 140% per replica at 2 replicas: 2 * 1.4 / 0.8 = 3.5 -> 4
    assert "(2 -> 4)" in a.advice


def test_connections_cross_150_of_200_and_the_pool_is_raised() -> None:
    a = assess(RESOURCES["connections"], hourly(lambda d: 120 + d), NOW, None, 200.0)
    assert a.days == pytest.approx(30, abs=0.5)
    assert a.utilization == pytest.approx(0.6)
    assert "raise the connection pool within 30 days" in a.advice
    # 210 connections in 90 days, kept at 150/200 of the ceiling: 280
    assert "200 -> 280" in a.advice


def test_relative_thresholds_need_a_capacity() -> None:
    grow = hourly(lambda d: 10 * GIB + 0.1 * GIB * d)
    a = assess(RESOURCES["db_size"], grow, NOW, None, 20 * GIB)
    assert a.days == pytest.approx(60, abs=0.5)  # 16 GiB (80% of 20) at 0.1 GiB/day
    assert "20.0 GiB -> 23.8 GiB" in a.advice  # 19 GiB in 90 days / 0.8
    unknown = assess(RESOURCES["db_size"], grow, NOW, None, None)
    assert unknown.days is None and unknown.forecast == "unknown (no capacity given)"


def test_a_row_in_the_runbook_shape_and_a_missing_row_says_why() -> None:
    a = assess(RESOURCES["disk"], hourly(lambda d: 0.45), NOW, None, 1.0, graph_url="http://p/g")
    row = a.row()
    assert list(row)[:5] == ["Resource", "Current", "Capacity", "Utilization", "note"]
    assert row["Resource"] == "Disk" and row["Current"] == "45%" and row["Capacity"] == "100%"
    assert row["Utilization"] == "45% - Low - plenty of headroom"
    assert row["graph"] == "http://p/g"
    empty = assess(RESOURCES["cpu"], [], NOW, None, 1.0)
    assert empty.missing == "no data" and empty.row()["Current"] == "n/a"
    assert empty.row()["forecast"] == "unknown (no data)"


def test_a_long_series_is_thinned_not_refused() -> None:
    minutely = [(NOW + m * 60.0, 0.5 + 0.01 * m / 1440) for m in range(-30 * 1440, 1)]
    trend = fit_trend(minutely, NOW)
    assert trend is not None and trend.points <= 1500
    assert trend.slope_per_day == pytest.approx(0.01)


def test_too_few_samples_give_no_trend() -> None:
    assert fit_trend([(NOW, 1.0), (NOW + 1, 2.0)], NOW) is None
    assert fit_trend([(NOW, 1.0)] * 5, NOW) is None
    a = assess(RESOURCES["memory"], [(NOW, 0.5)], NOW, None, 1.0)
    assert a.trend_30d is None and a.forecast == "unknown (too few samples)"


def test_window_and_formats() -> None:
    samples = hourly(lambda d: 1.0)
    assert len(window(samples, NOW, 7)) == 7 * 24 + 1
    assert fmt(1.5 * GIB, "bytes") == "1.5 GiB" and fmt(0.456, "ratio") == "46%"
    assert fmt(None, "rps") == "n/a" and fmt(2.25, "rps") == "2.2 req/s"


def _parse(text: str) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, value, ts = line.rsplit(" ", 2)
        series.setdefault(key, []).append((float(ts), float(value)))
    return series


def test_the_backfill_ends_before_the_head_and_gives_the_profiles_trend() -> None:
    profile = Profile()
    text = render_openmetrics(profile, "production", NOW, days=30)
    assert text.endswith("# EOF\n")
    series = _parse(text)
    used = next(v for k, v in series.items() if k.startswith("sampleapp_volume_used_bytes"))
    assert max(t for t, _ in used) <= NOW - HEAD_GAP_S
    assert min(t for t, _ in used) == pytest.approx(NOW - HEAD_GAP_S - 30 * DAY_S, abs=300)
    ratio = [(t, v / profile.volume_bytes) for t, v in used]
    a = assess(RESOURCES["disk"], ratio, NOW, None, 1.0)
    assert a.days == pytest.approx(20, abs=2)  # the 60% + 1%/day
    for key in series:
        assert f'instance="{INSTANCE}"' in key and 'env="production"' in key
    # a counter only grows, and its rate is the profile's request rate
    (counter,) = [v for k, v in series.items() if k.startswith("http_requests_total")]
    assert all(b[1] >= a_[1] for a_, b in zip(counter, counter[1:], strict=False))
    day = [(t, v) for t, v in counter if t >= NOW - HEAD_GAP_S - DAY_S]
    rate = (day[-1][1] - day[0][1]) / (day[-1][0] - day[0][0])
    assert rate == pytest.approx(profile.rps_now, rel=0.1)


def test_the_chart_is_a_png_with_the_forecast() -> None:
    from tasks.capacity_charts import chart_key, render_png

    samples = hourly(lambda d: 0.6 + 0.01 * d)
    a = assess(RESOURCES["disk"], samples, NOW, None, 1.0)
    png = render_png(a, samples, NOW)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert chart_key("2026-12-02", "disk") == "reports/capacity/2026-12-02/disk.png"
