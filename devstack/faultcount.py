"""A process-wide count of the faults this process injected, by kind.

The fault proxies (:mod:`devstack.faultproxy`, :mod:`devstack.tcpfaultproxy`) add every
request or connection a fault acted on; tests add the faults they make by other means (a
process killed, a session terminated) through ``tests.support.count_fault``. The count only
grows: a reader takes ``totals()`` before and after what it measures and subtracts.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Generic, Self, TypeVar

R = TypeVar("R")

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def record(kind: str, n: int = 1) -> None:
    """Count ``n`` injected faults of ``kind`` (e.g. ``"http 503"``, ``"tcp cut"``, ``"kill"``)."""
    if n < 0:
        raise ValueError("a fault count only grows")
    with _lock:
        _counts[kind] += n


def totals() -> dict[str, int]:
    """Every kind counted so far in this process, with its count."""
    with _lock:
        return dict(_counts)


class RuleBook(Generic[R]):
    """What both fault proxies share: their rules, what the rules hit, and ``with`` support.

    Subclasses set ``rules``, ``hits`` and ``_lock`` in ``__init__`` and define ``start`` and
    ``stop``.
    """

    rules: list[R]
    hits: Counter[str]
    _lock: threading.Lock

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def add(self, rule: R) -> R:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def count(self, action: str) -> int:
        with self._lock:
            return self.hits[action]
