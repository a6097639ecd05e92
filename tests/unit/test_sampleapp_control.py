"""The sample app's leak fault and volume listing, without a server (pure and tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstack.sampleapp.control import (
    BASE_MEMORY_BYTES,
    MEMORY_LIMIT_BYTES,
    MIB,
    FaultError,
    PodFaults,
    Volume,
    fault_behaviour,
    pod_memory,
)
from devstack.sampleapp.pods import Pod


def test_a_leaking_pod_grows_from_its_base_to_its_limit() -> None:
    assert pod_memory(0.0, 1000) == BASE_MEMORY_BYTES
    assert pod_memory(MIB, 10) == BASE_MEMORY_BYTES + 10 * MIB
    assert pod_memory(MIB, 10_000) == MEMORY_LIMIT_BYTES
    assert pod_memory(MIB, -5) == BASE_MEMORY_BYTES


def test_leak_fault_rate_and_its_bounds() -> None:
    assert fault_behaviour("leak").leak_bytes_per_s == MIB
    assert fault_behaviour("leak", leak_mb_per_s=8).leak_bytes_per_s == 8 * MIB
    for bad in (0, -1, 5000):
        with pytest.raises(FaultError, match="leak_mb_per_s"):
            fault_behaviour("leak", leak_mb_per_s=bad)


def test_memory_grows_with_time_since_the_injection_and_a_new_pod_runs_clean() -> None:
    now = [100.0]
    faults = PodFaults(clock=lambda: now[0])
    leaking, fresh = Pod("web-app-0", "img"), Pod("web-app-new", "img")
    leak = fault_behaviour("leak", leak_mb_per_s=2)
    faults.inject([leaking.name], "leak", leak)
    now[0] += 30
    assert faults.memory(leaking, leak) == BASE_MEMORY_BYTES + 60 * MIB
    assert faults.memory(fresh, fault_behaviour("errors")) == BASE_MEMORY_BYTES
    faults.keep_only([fresh])  # the leaking pod was replaced (a restart)
    assert faults.of(leaking) is None
    assert faults.memory(leaking, leak) == BASE_MEMORY_BYTES
    assert faults.describe() == {}


def test_volume_listing_per_directory_and_log_ages(tmp_path: Path) -> None:
    volume = Volume(tmp_path / "vol", 10_000)
    old = volume.fill(3000, age_s=7200)
    new = volume.fill(1000)
    volume.fill(2000, folder="uploads")
    (volume.root / "notes.txt").write_bytes(b"x" * 10)
    listing = volume.listing()
    assert listing["used_bytes"] == 6010
    assert listing["dirs"] == {
        ".": {"bytes": 10, "files": 1},
        "logs": {"bytes": 4000, "files": 2},
        "uploads": {"bytes": 2000, "files": 1},
    }
    names = [f["name"] for f in listing["logs"]]
    assert names == [new.name, old.name]  # newest first
    assert 7100 < listing["logs"][1]["age_s"] < 7300
    with pytest.raises(ValueError, match="uploads"):
        volume.fill(10, folder="../etc")


def test_delete_logs_removes_only_plain_files_of_logs(tmp_path: Path) -> None:
    volume = Volume(tmp_path / "vol", 10_000)
    log = volume.fill(100)
    upload = volume.fill(100, folder="uploads")
    outside = tmp_path / "outside.log"
    outside.write_text("keep me")
    os.symlink(outside, volume.root / "logs" / "link.log")
    for bad in ("../uploads/" + upload.name, "link.log", "missing.log", "", ".."):
        with pytest.raises(ValueError):
            volume.delete_logs([log.name, bad])
        assert log.exists()  # refused as a whole: nothing removed
    assert volume.delete_logs([log.name]) == [log.name]
    assert not log.exists() and upload.exists() and outside.exists()
