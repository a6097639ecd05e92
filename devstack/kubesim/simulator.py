"""One simulated cluster: the store, its clock, its configuration and its faults.

``Simulator.call(fn)`` is how every API request runs: under one lock, first bring the cluster
up to the clock's present (``controller.advance``), then run the request.  An optional
``Ticker`` thread does the same catch-up in the background so timestamps move even when
nobody is asking.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from devstack.kubesim.clock import Clock, SystemClock
from devstack.kubesim.controller import SimConfig, advance, reconcile
from devstack.kubesim.faults import FaultInjector
from devstack.kubesim.pods import DOWN_REASONS
from devstack.kubesim.registry import Registry
from devstack.kubesim.seed import seed_default
from devstack.kubesim.store import Store

T = TypeVar("T")
logger = logging.getLogger(__name__)
SEEDS = ("default", "none")


class Simulator:
    """A Kubernetes cluster in memory, advanced lazily to ``clock.now()``."""

    def __init__(
        self,
        *,
        seed: str = "default",
        clock: Clock | None = None,
        config: SimConfig | None = None,
        rng_seed: int | None = None,
    ) -> None:
        if seed not in SEEDS:
            raise ValueError(f"unknown seed {seed!r}; expected one of {SEEDS}")
        self.seed = seed
        self.clock: Clock = clock or SystemClock()
        self.initial_config = config or SimConfig()
        self.config = self.initial_config
        self.rng_seed = rng_seed
        self.faults = FaultInjector()
        self.lock = threading.RLock()
        self.store = Store(now=self.clock.now(), rng_seed=rng_seed)
        self.registry = Registry(self.store)
        self.reset()

    def reset(self, *, config: bool = False, faults: bool = True) -> None:
        """Go back to the seed state (and optionally the startup config; faults are cleared)."""
        with self.lock:
            self.store = Store(now=self.clock.now(), rng_seed=self.rng_seed)
            self.registry = Registry(self.store)
            if self.seed == "default":
                seed_default(self.registry)
            if config:
                self.config = self.initial_config
            if faults:
                self.faults.clear()

    def configure(self, changes: dict[str, Any]) -> SimConfig:
        """Change kubelet timings; unknown keys or negative numbers raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(SimConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}; known: {sorted(known)}")
        values: dict[str, float] = {}
        for key, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a non-negative number")
            values[key] = float(value)
        with self.lock:
            self.sync()
            self.config = dataclasses.replace(self.config, **values)
            return self.config

    def take_down(self, namespace: str, name: str, reason: str = "Error") -> dict[str, Any]:
        """Take one pod down from now on: its container crash-loops with ``reason`` as its
        last termination and it is never Ready again (its replacement starts clean).

        Raises:
            KeyError: no such pod.
            ValueError: an unknown reason.
        """
        if reason not in DOWN_REASONS:
            raise ValueError(f"reason must be one of {', '.join(DOWN_REASONS)}, got {reason!r}")
        with self.lock:
            self.sync()
            pod = self.store.get("pods", namespace, name)
            runtime = self.store.pods.get(pod["metadata"]["uid"]) if pod else None
            if pod is None or runtime is None:
                raise KeyError(f"no pod {name!r} in namespace {namespace!r}")
            now = self.store.time
            self.store.pods[pod["metadata"]["uid"]] = dataclasses.replace(
                runtime, down_at=now, down_reason=reason
            )
            reconcile(self.store, self.config, now)
            found = self.store.get("pods", namespace, name)
            return found if found is not None else pod

    def sync(self) -> None:
        """Bring the cluster up to the clock's present."""
        with self.lock:
            advance(self.store, self.config, self.clock.now())

    def call(self, fn: Callable[[Registry], T]) -> T:
        """Run ``fn`` against an up-to-date cluster, atomically.

        If ``fn`` wrote anything, the controllers react at once (same instant), as the real
        ones do within milliseconds; the caller still gets the object as written.
        """
        with self.lock:
            self.sync()
            before = self.store.revision
            result = fn(self.registry)
            if self.store.revision != before:
                reconcile(self.store, self.config, self.store.time)
            return result


class Ticker:
    """A daemon thread calling ``simulator.sync()`` every ``interval`` seconds."""

    def __init__(self, simulator: Simulator, interval: float) -> None:
        self.simulator = simulator
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubesim-ticker", daemon=True)

    def start(self) -> None:
        """Start ticking."""
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.simulator.sync()
            except Exception:  # keep ticking: requests still catch up on their own
                logger.exception("kubesim: background sync failed")
