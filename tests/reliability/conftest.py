"""Fixtures shared by the reliability tests (rotation: each test gets its own world)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.stack import StackInfo
from tests.rotation_support import World


@pytest.fixture
def world(stack: StackInfo, bootstrapped: object) -> Iterator[World]:
    w = World(stack).create()
    yield w
    w.remove()
