"""A process-wide count of the faults this process injected, by kind.

The fault proxies (:mod:`devstack.faultproxy`, :mod:`devstack.tcpfaultproxy`) add every
request or connection a fault acted on; tests add the faults they make by other means (a
process killed, a session terminated) through ``tests.support.count_fault``. The count only
grows: a reader takes ``totals()`` before and after what it measures and subtracts.
"""

from __future__ import annotations

import threading
from collections import Counter

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
