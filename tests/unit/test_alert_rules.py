"""The alert rules: generated from the thresholds, unit-tested with ``promtool test rules``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from blocks.kube import Thresholds as BlockThresholds
from decisions.alert_catalog import rules
from decisions.alert_labels import RUNBOOKS, SEVERITIES
from decisions.alert_rules import RULES_FILE, main, render
from decisions.deploy_verify import BakeThresholds
from opsflows.thresholds import THRESHOLDS, Thresholds

PROMTOOL_DIR = Path(__file__).with_name("promtool")
PROMTOOL_TESTS = sorted(PROMTOOL_DIR.glob("*_test.yml"))


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool ships with Debian's prometheus package: run `make deps`"
    return path


def test_committed_rules_file_is_what_the_thresholds_give() -> None:
    assert RULES_FILE.read_text() == render(), "run: python -m decisions.alert_rules"
    assert main(["--check"]) == 0


def test_check_fails_when_the_file_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "alert_rules.yml"
    stale.write_text(render(Thresholds(request_queue=999)))
    monkeypatch.setattr("decisions.alert_rules.RULES_FILE", stale)
    assert main(["--check"]) == 1


def test_promtool_rule_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", *(p.name for p in PROMTOOL_TESTS)],
        cwd=PROMTOOL_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(PROMTOOL_TESTS) == 2


def test_every_rule_and_severity_has_a_firing_and_a_quiet_case() -> None:
    cases = [c for p in PROMTOOL_TESTS for c in yaml.safe_load(p.read_text())["tests"]]
    fired: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for case in cases:
        series = " ".join(s["series"] for s in case["input_series"])
        for check in case["alert_rule_test"]:
            got = {(check["alertname"], a["exp_labels"]["severity"]) for a in check["exp_alerts"]}
            fired |= got
            # quiet: a check expecting nothing, or input beside the firing one that stays quiet
            envs = {
                a["exp_labels"].get("instance", a["exp_labels"]["env"]) for a in check["exp_alerts"]
            }
            if not check["exp_alerts"] or series.count("env=") > len(envs):
                quiet.add(check["alertname"])
    wanted = {(r.alert, r.severity) for r in rules()}
    assert wanted <= fired, f"no firing case for {sorted(wanted - fired)}"
    assert {r.alert for r in rules()} <= quiet


def test_every_rule_carries_severity_runbook_environment_a_reasoned_for_and_keep() -> None:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == len(rules())
    for rule in loaded:
        labels = rule["labels"]
        assert labels["severity"] in SEVERITIES
        assert labels["runbook"] in RUNBOOKS
        assert labels["environment"] == "{{ $labels.env }}"
        assert rule["for"]
    text = RULES_FILE.read_text()
    assert text.count("# for: ") == len(loaded)
    assert text.count("# keep_firing_for: ") == len(loaded)  # a reason, even for none
    kept = {(r["alert"], r["labels"]["severity"]): r.get("keep_firing_for") for r in loaded}
    assert kept[("ServiceDown", "P1")] == "2m"
    assert kept[("HighErrorRate", "P2")] == kept[("HighLatencyP95", "P2")] == "5m"
    assert kept[("LongRunningTransaction", "P3")] is None
    check = subprocess.run([promtool(), "check", "rules", str(RULES_FILE)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_rules_read_the_runbook_numbers() -> None:
    text = render()
    for number in ("> 0.005 < 0.05", ">= 0.05", "> 2\n", "> 0.8\n", "> 0.85\n", "> 150", "> 1000"):
        assert number in text, number
    assert "> 93600" in text  # 26 h
    assert "< 604800" in text and "< 2.592e+06 >= 604800" in text  # 7 and 30 days
    assert "> 500" in render(Thresholds(request_queue=500))


def test_a_test_stack_caps_for_except_on_machine_wide_rules(tmp_path: Path) -> None:
    text = render(for_override_s=3)
    groups = yaml.safe_load(text)["groups"]
    by_name = {(r["alert"], r["labels"]["severity"]): r["for"] for g in groups for r in g["rules"]}
    assert by_name[("ServiceDown", "P1")] == "3s"
    assert by_name[("CertificateExpiry", "P2")] == "3s"
    assert by_name[("HostCpuHigh", "P2")] == "10m"  # a busy CI machine must not page
    # ... and alerts resolve within seconds too (keep_firing_for capped alike)
    kept = {
        (r["alert"], r["labels"]["severity"]): r.get("keep_firing_for")
        for g in groups
        for r in g["rules"]
    }
    assert kept[("ServiceDown", "P1")] == kept[("HighErrorRate", "P2")] == "3s"
    assert kept[("HostCpuHigh", "P2")] == "5m"
    assert kept[("LongRunningTransaction", "P3")] is None
    path = tmp_path / "rules.yml"
    path.write_text(text)
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_bake_and_the_block_default_to_the_same_thresholds() -> None:
    bake, block = BakeThresholds(), BlockThresholds()
    assert bake.error_rate == block.error_rate == THRESHOLDS.error_rate == 0.005
    assert bake.p95_latency_s == block.p95_latency_s == THRESHOLDS.p95_latency_s == 2.0


def test_error_rate_severity_table() -> None:
    assert THRESHOLDS.error_rate_severity(0.004) is None
    assert THRESHOLDS.error_rate_severity(0.01) == "P3"
    assert THRESHOLDS.error_rate_severity(0.05) == "P2"
    assert THRESHOLDS.error_rate_severity(0.6) == "P2"
    with pytest.raises(ValueError):
        Thresholds(error_rate=0.1, error_rate_page=0.05)
    with pytest.raises(ValueError):
        Thresholds(cert_page_days=40)
