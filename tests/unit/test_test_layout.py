"""The test tree's own rule: every test module has a basename of its own.

The test folders are not packages, so pytest imports each module by its basename: two files
named alike in different tiers break collection of the whole run ("import file mismatch").
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_basename_is_unique() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    twice = sorted(name for name, count in names.items() if count > 1)
    assert not twice, f"rename one of each: {twice}"
