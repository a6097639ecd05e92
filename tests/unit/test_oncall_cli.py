"""``opsflows oncall``: who is on call now and next, from a schedule file (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsflows.cli import main

SCHEDULE = """
version: 7
timezone: America/New_York
rotation:
  start: 2026-01-05T09:00:00
  primary: [alice, bob]
  secondary: next
overrides:
  - {start: 2026-01-13T09:00:00, end: 2026-01-14T09:00:00, role: primary, replaces: bob,
     by: carol, reason: bob moves house}
escalation: {lead: frank}
channels: {carol: [custom-webhook/page-carol]}
"""


def write(tmp_path: Path, text: str = SCHEDULE) -> Path:
    path = tmp_path / "oncall.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_json_names_now_and_next_with_the_override_in_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path)
    assert main(["oncall", "--file", str(path), "--at", "2026-01-13T15:00:00Z", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["now"]["primary"] == "carol" and view["now"]["secondary"] == "alice"
    assert view["now"]["overrides"][0]["reason"] == "bob moves house"
    assert view["now"]["channels"]["carol"] == ["custom-webhook/page-carol"]
    assert view["now"]["start"] == "2026-01-12T14:00:00+00:00"  # 09:00 in New York
    assert (view["next"]["primary"], view["next"]["lead"]) == ("alice", "frank")
    assert view["version"] == "7"


def test_text_is_for_people(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["oncall", "--file", str(write(tmp_path)), "--at", "2026-01-06T12:00Z"]) == 0
    out = capsys.readouterr().out
    assert "Now: shift 0, Mon 2026-01-05 09:00 America/New_York (14:00 UTC)" in out
    assert "primary    alice" in out and "routing (no channel)" in out


def test_bad_input_and_bad_files_say_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path)
    assert main(["oncall", "--file", str(path), "--at", "soon"]) == 2
    assert "not an ISO 8601" in capsys.readouterr().err
    assert main(["oncall", "--file", str(tmp_path / "absent.yaml")]) == 1
    err = capsys.readouterr().err
    assert "absent.yaml does not exist" in err and "OPSFLOWS_ONCALL_FILE" in err
    write(tmp_path, SCHEDULE.replace("lead: frank", "lead: mallory"))
    assert main(["oncall", "--file", str(path), "--at", "2026-01-06T12:00Z"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: escalation.lead names 'mallory'" in err and "roles.yaml" in err
    write(tmp_path, "rotation: [unclosed")
    assert main(["oncall", "--file", str(path)]) == 1
    assert "is not valid YAML" in capsys.readouterr().err
    assert main(["oncall", "--file", str(write(tmp_path)), "--at", "2025-12-31T00:00Z"]) == 1
    assert "nobody is on call" in capsys.readouterr().err
