"""The reliability tier's ledger: what counts as lost data, and the summary it prints."""

from __future__ import annotations

from collections import Counter

from tests.safety_support import Ledger, Loss, Record, Snapshot, difference, lost


def snap(databases: set[str], backups: set[str], rows: dict[str, int]) -> Snapshot:
    return Snapshot(frozenset(databases), frozenset(backups), rows)


BEFORE = snap({"app", "opsflows", "mine"}, {"b/1/manifest.json"}, {"app.public.t": 10})


def test_what_was_there_before_and_is_gone_after_is_lost() -> None:
    after = snap({"app", "opsflows"}, set(), {"app.public.t": 7})
    assert lost(BEFORE, after) == Loss(("mine",), ("b/1/manifest.json",), {"app.public.t": 3})
    gone = snap({"app", "opsflows", "mine"}, {"b/1/manifest.json"}, {})
    assert lost(BEFORE, gone).rows == {"app.public.t": 10}, "a table that vanished"


def test_what_a_test_made_and_removed_or_added_is_not_lost() -> None:
    after = snap(
        {"app", "opsflows", "mine", "new"}, {"b/1/manifest.json", "b/2/manifest.json"},
        {"app.public.t": 12, "app.public.new": 1},
    )  # fmt: skip
    assert not lost(BEFORE, after)
    assert not lost(BEFORE, BEFORE)


def test_measured_late_only_what_existed_before_the_module_counts() -> None:
    existed = snap({"app", "opsflows"}, set(), {"app.public.t": 10})
    after = snap({"app", "opsflows"}, set(), {"app.public.t": 9})
    assert lost(BEFORE, after, existed) == Loss((), (), {"app.public.t": 1})


def test_fault_difference_counts_only_what_grew() -> None:
    assert difference({"http 503": 2, "kill": 1}, {"http 503": 5, "kill": 1, "tcp cut": 1}) == (
        Counter({"http 503": 3, "tcp cut": 1})
    )


def test_summary_counts_faults_and_losses_and_names_the_tests() -> None:
    ledger = Ledger(
        [
            Record("t.py::a", Counter({"http 503": 2, "kill": 1}), Loss()),
            Record("t.py::b", Counter(), Loss(("db1",), (), {"app.public.t": 4})),
            Record("t.py::c", Counter({"kill": 1}), None, "no snapshot before the test (x)"),
        ]
    )
    lines = ledger.summary()
    assert lines[0] == (
        "reliability: 4 faults injected in 2 tests (of 3); data before/after each test: "
        "1 databases lost, 0 backups lost, 4 rows lost; not measured in 1 tests"
    )
    assert lines[1] == "  faults by kind: http 503: 2, kill: 2"
    assert "  LOST in t.py::b: database db1 lost; 4 rows of app.public.t lost" in lines
    assert "  not measured in t.py::c: no snapshot before the test (x)" in lines
    assert [r.nodeid for r in ledger.lost] == ["t.py::b"]
