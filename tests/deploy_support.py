"""What the deploy tests share: fresh image names, the two environments, production traffic."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

from blocks.kube import KubeEnvironment
from devstack.loadgen import run_load


def new_image(suffix: str = "") -> str:
    """A version nobody deployed yet (so every deploy is a real change)."""
    return f"registry.local/web-app:4.{uuid.uuid4().int % 10_000}.0{suffix}"


def environments() -> dict[str, KubeEnvironment]:
    """The staging and production blocks saved by bootstrap."""
    return {name: KubeEnvironment.load(name) for name in ("staging", "production")}


@contextlib.contextmanager
def steady_load(url: str, rps: float = 15) -> Iterator[None]:
    """Steady traffic on ``url`` for the body of the ``with``: the error rate and p95 the
    bake judges are real."""
    stop = threading.Event()
    thread = threading.Thread(target=run_load, args=(url, rps, 0, stop), daemon=True)
    thread.start()
    time.sleep(2)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)
