"""Work a served run would otherwise do on its own clock, done once in the forkserver.

A process's first flow run imports modules Prefect loads lazily (the task engine, the flow
visualisation helpers with graphviz, anyio's asyncio backend, rich's emoji table, ...) and
builds the validators of pydantic models that were left incomplete at import (forward
references). Every served run is a fresh fork, so each paid that again: about a tenth of a
second of CPU per run.

The serving process's forkserver imports this module (``deployments.serve.PRELOAD``), so
every run forked from it starts with that done. Only CPU work happens here: no thread, socket
or event loop, because the forkserver must stay single-threaded to fork safely.

Last, the preloaded heap (about 240,000 objects: Prefect, the runbooks and their libraries)
is frozen out of the garbage collector (``gc.freeze``, meant for this: a process that forks
workers). A run's full collections scanned all of it, 0.1-0.14 s with the GIL held during a
backup; they now scan only what the run made. The frozen pages also stay shared with the
forkserver instead of being copied into each run by the collector's writes.
"""

from __future__ import annotations

import gc
import importlib

from pydantic import BaseModel

#: Modules a first flow run with tasks, logs and artifacts imports on its own (Prefect 3.9).
LAZY_IMPORTS = (
    "prefect.task_engine",
    "prefect._internal.states",
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "rich._emoji_codes",
    "_strptime",
    "encodings.idna",
    "stringprep",
)


def _rebuild(model: type[BaseModel]) -> bool:
    # What pydantic does on a model's first use (raise_errors=False: a forward reference
    # that cannot be resolved yet stays as it was, for its first use to try again).
    return model.model_rebuild(raise_errors=False) is not False


def complete_models() -> int:
    """Build every imported pydantic model that is still incomplete; how many were built."""
    built = 0
    todo: list[type[BaseModel]] = [BaseModel]
    seen: set[type[BaseModel]] = set()
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            todo.append(sub)
            if not getattr(sub, "__pydantic_complete__", True) and _rebuild(sub):
                built += 1
    return built


def warm() -> int:
    """Import the lazy modules, complete the models, freeze the heap; how many models were
    built."""
    for name in LAZY_IMPORTS:
        importlib.import_module(name)
    built = complete_models()
    gc.collect()  # garbage is collected before the freeze, not kept for good
    gc.freeze()
    return built


warm()
