"""Fault injection and the request log, as an ASGI middleware.

Rules (``POST /_sim/faults``) fail the next ``count`` API requests whose method and path match,
with a ``Status`` body of the given code; ``delay_seconds`` slows them down first; ``after``
lets the request take effect and then loses the response (the nastiest case for a retrying
client).  ``{"down": true}`` answers 503 to every API request until cleared.  ``/_sim`` and
``/_sink`` are never affected.

Every request a fault acted on is counted by kind (``"503"``, ``"delay"``, ``"down"``...) for
the life of the process: clearing the rules or resetting the simulator does not reset the
count, so a test can read it before and after itself (``injected`` in ``GET /_sim/faults``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devstack.kubesim.errors import REASONS, status_body

EXEMPT_PREFIXES = ("/_sim", "/_sink")


@dataclass
class FaultRule:
    """Fail (or slow down) matching requests."""

    status: int | None = 503
    method: str | None = None
    path: str = ".*"
    count: int | None = 1
    delay_seconds: float = 0.0
    after: bool = False
    reason: str | None = None
    message: str | None = None
    hits: int = 0
    _pattern: re.Pattern[str] = field(default=re.compile(".*"), repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        """Build a rule from the admin API's JSON (raises ``ValueError`` on bad input)."""
        allowed = {
            "status",
            "method",
            "path",
            "count",
            "delay_seconds",
            "after",
            "reason",
            "message",
        }
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}; allowed: {sorted(allowed)}")
        status = data.get("status", 503 if "delay_seconds" not in data else None)
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError("status must be an HTTP error code (400-599) or null")
        count = data.get("count", 1)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError("count must be a positive integer or null (until cleared)")
        delay = data.get("delay_seconds", 0.0)
        if not isinstance(delay, int | float) or delay < 0:
            raise ValueError("delay_seconds must be a non-negative number")
        path = str(data.get("path", ".*"))
        try:
            pattern = re.compile(path)
        except re.error as exc:
            raise ValueError(f"path is not a valid regular expression: {exc}") from exc
        method = data.get("method")
        return cls(
            status=status,
            method=str(method).upper() if method else None,
            path=path,
            count=count,
            delay_seconds=float(delay),
            after=bool(data.get("after", False)),
            reason=data.get("reason"),
            message=data.get("message"),
            _pattern=pattern,
        )

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to a request."""
        return (self.method is None or self.method == method.upper()) and bool(
            self._pattern.search(path)
        )

    def to_json(self) -> dict[str, Any]:
        """The rule as the admin API shows it."""
        data = asdict(self)
        data.pop("_pattern")
        return data


class FaultInjector:
    """The active rules, the down switch and a log of recent API requests (thread-safe)."""

    def __init__(self, log_size: int = 1000) -> None:
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []
        self.down = False
        self.log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self.injected: Counter[str] = Counter()

    def add(self, rule: FaultRule) -> None:
        """Activate a rule (rules are tried in the order they were added)."""
        with self._lock:
            self.rules.append(rule)

    def set_down(self, down: bool) -> None:
        """Turn the whole API off (503) or back on."""
        with self._lock:
            self.down = down

    def clear(self) -> None:
        """Remove every rule and turn the API back on."""
        with self._lock:
            self.rules.clear()
            self.down = False

    def take(self, method: str, path: str) -> FaultRule | None:
        """The first rule matching the request, using up one of its ``count``."""
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.hits += 1
                    self.injected[str(rule.status) if rule.status is not None else "delay"] += 1
                    if rule.count is not None:
                        rule.count -= 1
                        if rule.count <= 0:
                            self.rules.remove(rule)
                    return rule
            return None

    def count_down(self) -> None:
        """Count a request answered 503 because the whole API is down."""
        with self._lock:
            self.injected["down"] += 1

    def record(self, method: str, path: str, query: str, status: int, fault: bool) -> None:
        """Append to the request log."""
        with self._lock:
            self.log.append(
                {
                    "time": time.time(),
                    "method": method,
                    "path": path,
                    "query": query,
                    "status": status,
                    "fault": fault,
                }
            )

    def snapshot(self) -> dict[str, Any]:
        """The admin API's view of the faults."""
        with self._lock:
            return {
                "down": self.down,
                "rules": [rule.to_json() for rule in self.rules],
                "injected": dict(self.injected),
            }

    def requests(self) -> list[dict[str, Any]]:
        """The recent API requests, oldest first."""
        with self._lock:
            return list(self.log)

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.log.clear()


async def _send_status(send: Send, code: int, message: str, reason: str | None) -> None:
    body = json.dumps(status_body(code, message, reason=reason or REASONS.get(code))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class FaultMiddleware:
    """Applies a ``FaultInjector`` to every request outside ``/_sim`` and ``/_sink``."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        method = str(scope["method"])
        query = scope.get("query_string", b"").decode(errors="replace")
        logged = path not in ("/healthz", "/readyz", "/livez")
        if self.injector.down:
            self.injector.count_down()
            await _send_status(
                send, 503, "the Kubernetes API is down (kubesim fault injection)", None
            )
            if logged:
                self.injector.record(method, path, query, 503, True)
            return
        rule = self.injector.take(method, path)
        if rule is not None and rule.delay_seconds:
            await asyncio.sleep(rule.delay_seconds)
        if rule is not None and rule.status is not None:
            if rule.after:
                await self.app(scope, receive, _discard)
            message = rule.message or f"kubesim injected fault for {method} {path}"
            await _send_status(send, rule.status, message, rule.reason)
            if logged:
                self.injector.record(method, path, query, rule.status, True)
            return
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, recording_send)
        if logged:
            self.injector.record(method, path, query, status, rule is not None)


async def _discard(message: Message) -> None:
    """An ASGI ``send`` that drops the response (for ``after`` faults)."""
