"""Multipart upload sizing as pure functions: stay under S3's 10,000-part limit.

A dump's size is unknown until it ends, so the first part size comes from an estimate
(:func:`choose_part_size`) and parts also grow as the upload goes (:func:`part_size_for`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MIB = 1024 * 1024
#: S3 limits: at most 10,000 parts; every part but the last at least 5 MiB, at most 5 GiB.
S3_MAX_PARTS = 10_000
S3_MIN_PART = 5 * MIB
S3_MAX_PART = 5 * 1024 * MIB
#: Parts per size step: the part size doubles every this many parts (see ``part_size_for``).
PARTS_PER_STEP = 1_000


def choose_part_size(expected_bytes: int, *, minimum: int = 8 * MIB) -> int:
    """A first part size that keeps ``expected_bytes`` well under S3's 10,000 parts.

    The estimate is only a guide (a dump's size is unknown until it ends): uploads also
    grow the part size as they go (:func:`part_size_for`), so even a dump far larger than
    expected stays within the limit.
    """
    floor = max(minimum, S3_MIN_PART)
    wanted = math.ceil(max(expected_bytes, 0) / (PARTS_PER_STEP * 5))
    size = max(floor, math.ceil(wanted / MIB) * MIB)
    return min(size, S3_MAX_PART)


def part_size_for(part_number: int, base: int) -> int:
    """Size of part ``part_number`` (1-based): ``base``, doubled every 1,000 parts.

    With an 8 MiB base the 10,000 parts hold about 8 TiB.
    """
    if part_number < 1:
        raise ValueError("part numbers start at 1")
    step = (part_number - 1) // PARTS_PER_STEP
    return min(base << step, S3_MAX_PART)


def max_upload_bytes(base: int) -> int:
    """The largest dump that fits in 10,000 parts starting at ``base``."""
    return sum(part_size_for(n, base) for n in range(1, S3_MAX_PARTS + 1, PARTS_PER_STEP)) * (
        PARTS_PER_STEP
    )


def estimate_dump_bytes(database_bytes: int, previous: Sequence[tuple[int, int]] = ()) -> int:
    """Expected dump size: the last (dump, database) size ratio applied, else the db size."""
    for dump_bytes, db_bytes in reversed(previous):
        if db_bytes > 0 and dump_bytes > 0:
            return max(1, round(database_bytes * dump_bytes / db_bytes))
    return max(1, database_bytes)
