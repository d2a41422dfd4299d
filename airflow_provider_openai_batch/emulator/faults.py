"""Fault injection rules for the emulator.

A rule matches a *route key* such as ``"POST /v1/batches"`` or ``"GET /v1/batches/{id}"`` (see
:data:`ROUTE_KEYS`), a concrete ``"METHOD /v1/path"``, or ``"*"`` (every request). Kinds:

``status``
    answer ``status`` (e.g. 429, 500, 502, 503) with an OpenAI-style JSON error body, optionally with
    ``Retry-After: <retry_after>`` and/or ``retry-after-ms: <retry_after_ms>``. The request is not executed.
``latency``
    sleep ``latency`` seconds, then carry on (other rules may still apply).
``drop``
    close the TCP connection without sending anything. The request is not executed.
``created_then_error``
    execute the request (a batch or file really gets created and counted), then answer 500.
``truncated``
    execute the request, send the status line and the full ``Content-Length`` but only half the body,
    then close the connection.
``not_json``
    answer 200 with an HTML page (like a misbehaving proxy). The request is not executed.

Every rule has ``times`` (how many matching requests it fires on; ``None`` = forever) and ``after``
(skip the first ``after`` matching requests). Each rule counts every request that matches its route
(``rule.seen``) and how often it fired (``rule.fired``). Rules are checked in the order they were added:
all eligible ``latency`` rules fire and add up; the first eligible rule of any other kind decides the
answer and later non-latency rules do not fire on that request (their ``seen`` still counts it).

CLI syntax (``--fault``, repeatable)::

    ROUTE:KIND[=VALUE][:OPTION=VALUE]...

    "POST /v1/batches:status=503:times=2"
    "GET /v1/batches/{id}:latency=0.25:times=forever"
    "*:status=429:retry_after=1:times=1"
    "POST /v1/files:created_then_error"
    "GET /v1/files/{id}/content:truncated:after=1"

``KIND`` is ``status=N``, ``latency=SECONDS``, ``drop``, ``created_then_error``, ``truncated`` or
``not_json`` (``kind=NAME`` also works). Options: ``times=N|forever`` (default 1), ``after=N``
(default 0), ``retry_after=SECONDS``, ``retry_after_ms=MS``, ``status=N``, ``latency=SECONDS``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

FAULT_KINDS = ("status", "latency", "drop", "created_then_error", "truncated", "not_json")

#: Route keys the emulator serves (Azure ``/openai/v1/...`` paths map onto the same keys).
ROUTE_KEYS = (
    "POST /v1/files",
    "GET /v1/files",
    "GET /v1/files/{id}",
    "GET /v1/files/{id}/content",
    "DELETE /v1/files/{id}",
    "POST /v1/batches",
    "GET /v1/batches",
    "GET /v1/batches/{id}",
    "POST /v1/batches/{id}/cancel",
)


@dataclass
class FaultRule:
    """One fault rule. ``seen`` and ``fired`` are updated by the server (read them, don't set them)."""

    route: str
    kind: str
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    latency: float | None = None
    times: int | None = 1
    after: int = 0
    seen: int = 0
    fired: int = 0

    def matches(self, route_key: str, method: str, path: str) -> bool:
        return self.route in ("*", route_key, f"{method} {path}")

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


class FaultRegistry:
    """Thread-safe, ordered list of :class:`FaultRule` objects (``server.faults``)."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(
        self,
        route: str,
        kind: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
        latency: float | None = None,
        times: int | None = 1,
        after: int = 0,
    ) -> FaultRule:
        """Add a rule and return it (see the module docstring for the kinds)."""
        route = _normalize_route(route)
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if kind == "status":
            if status is None:
                raise ValueError("a 'status' fault needs status=<HTTP code>")
            if not 100 <= int(status) <= 599:
                raise ValueError(f"invalid HTTP status {status!r}")
        if kind == "latency" and (latency is None or latency < 0):
            raise ValueError("a 'latency' fault needs latency=<seconds >= 0>")
        if times is not None and times < 0:
            raise ValueError("times must be >= 0 or None")
        if after < 0:
            raise ValueError("after must be >= 0")
        rule = FaultRule(
            route=route,
            kind=kind,
            status=None if status is None else int(status),
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
            latency=latency,
            times=times,
            after=int(after),
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def add_spec(self, spec: str) -> FaultRule:
        """Add a rule from the CLI syntax, e.g. ``"POST /v1/batches:status=503:times=2"``."""
        route, kind, kwargs = parse_fault_spec(spec)
        return self.add(route, kind, **kwargs)  # type: ignore[arg-type]

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)

    def __iter__(self) -> Iterator[FaultRule]:
        return iter(self.rules)

    def decide(self, route_key: str, method: str, path: str) -> tuple[float, FaultRule | None]:
        """Record a request; return (total latency to add, the deciding non-latency rule or None)."""
        latency = 0.0
        chosen: FaultRule | None = None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(route_key, method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after or rule.exhausted:
                    continue
                if rule.kind == "latency":
                    rule.fired += 1
                    latency += rule.latency or 0.0
                elif chosen is None:
                    rule.fired += 1
                    chosen = rule
        return latency, chosen


def _normalize_route(route: str) -> str:
    route = " ".join(route.strip().split())
    if route == "*":
        return route
    parts = route.split(" ")
    if len(parts) != 2 or not parts[1].startswith("/"):
        raise ValueError(f"invalid fault route {route!r}; expected '*' or 'METHOD /v1/path'")
    method, path = parts
    if path.startswith("/openai/v1/"):
        path = path[len("/openai") :]
    return f"{method.upper()} {path.rstrip('/') or '/'}"


def _parse_times(value: str) -> int | None:
    if value.lower() in ("forever", "inf", "none", "always", "*"):
        return None
    return int(value)


def parse_fault_spec(spec: str) -> tuple[str, str, dict[str, object]]:
    """Parse ``ROUTE:KIND[=VALUE][:OPTION=VALUE]...`` into (route, kind, keyword arguments)."""
    fields = [f.strip() for f in spec.split(":")]
    if len(fields) < 2 or not fields[0]:
        raise ValueError(f"invalid fault spec {spec!r}; expected ROUTE:KIND[=VALUE][:OPTION=VALUE]...")
    route = fields[0]
    kind: str | None = None
    kwargs: dict[str, object] = {}
    for item in fields[1:]:
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        value = value.strip()
        if not sep:
            if key not in FAULT_KINDS:
                raise ValueError(f"invalid fault spec {spec!r}: unknown flag {key!r}")
            kind = kind or key
            continue
        try:
            if key == "kind":
                kind = value
            elif key == "status":
                kwargs["status"] = int(value)
                kind = kind or "status"
            elif key == "latency":
                kwargs["latency"] = float(value)
                kind = kind or "latency"
            elif key == "times":
                kwargs["times"] = _parse_times(value)
            elif key == "after":
                kwargs["after"] = int(value)
            elif key == "retry_after":
                kwargs["retry_after"] = float(value)
            elif key == "retry_after_ms":
                kwargs["retry_after_ms"] = float(value)
            else:
                raise ValueError(f"unknown option {key!r}")
        except ValueError as exc:
            raise ValueError(f"invalid fault spec {spec!r}: {exc}") from None
    if kind is None:
        raise ValueError(f"invalid fault spec {spec!r}: no fault kind given")
    if kind not in FAULT_KINDS:
        raise ValueError(f"invalid fault spec {spec!r}: unknown kind {kind!r}")
    return route, kind, kwargs
