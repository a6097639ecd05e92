"""kubesim: a Kubernetes API simulator the official ``kubernetes`` client talks to over HTTP.

Run it with ``python -m devstack.kubesim --host 127.0.0.1 --port 18080``, or in-process with
``run_in_thread()``.  Modules, from the bottom up:

* ``clock``: time sources (``SystemClock``, ``FakeClock``).
* ``selectors``, ``patch``: label/field selectors and the three patch formats.
* ``kinds``, ``workloads``, ``pods``: resource types, admission/defaults, derived objects, and
  the simulated kubelet.
* ``store``, ``registry``: objects with resourceVersions, and REST semantics over them.
* ``rollout``, ``controller``: the deployment/replicaset controllers, advanced in time.
* ``simulator``, ``faults``, ``api``, ``admin``, ``app``: the cluster object, fault injection and
  the HTTP surface.
"""

from __future__ import annotations

from devstack.kubesim.app import SimServer, create_app, run_in_thread
from devstack.kubesim.clock import FakeClock, SystemClock
from devstack.kubesim.controller import SimConfig
from devstack.kubesim.simulator import Simulator

__all__ = [
    "FakeClock",
    "SimConfig",
    "SimServer",
    "Simulator",
    "SystemClock",
    "create_app",
    "run_in_thread",
]
