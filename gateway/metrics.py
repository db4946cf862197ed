"""Prometheus metrics, in a registry per application so that several apps (tests) never collide."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from . import version
from .sessions import Revocation, Session, SessionStore

if TYPE_CHECKING:
    from .audit.log import AuditStats

# Any other method a client invents is counted as OTHER, so a scanner cannot grow the label set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The kinds of upstream failure the proxy reports; exported at zero from the start so that
# `rate()` works before the first failure.
UPSTREAM_ERROR_KINDS = ("unavailable", "timeout", "reset", "refused")
# The identity provider's endpoints the gateway calls: a label per kind of call, never the URL.
PROVIDER_REQUESTS = ("discovery", "keys", "token")
PROVIDER_ERROR_KINDS = ("status", "connection")  # an answer of 5xx; no answer at all (refused, reset, timeout)
# A user counts as active for this long after their last request (notebook_gateway_active_users).
ACTIVE_WINDOW_S = 15 * 60
# Seconds: the backends' calls (sessions, the provider) take milliseconds; starting a notebook takes minutes.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STARTUP_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800)


class Metrics:
    """Every metric the gateway exports on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds: per replica health.
        ProcessCollector(registry=self.registry)
        self.build_info = Gauge(
            "notebook_gateway_build_info",
            "Always 1; the labels say which build runs: the package version, Python, and the source commit.",
            ["version", "python", "commit"],
            registry=self.registry,
        )
        self.build_info.labels(version.version(), platform.python_version(), version.commit() or "unknown").set(1)
        self.requests = Counter(
            "notebook_gateway_requests",
            "Requests handled, by route class (proxy, api, page, health), method and status code.",
            ["route_class", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "notebook_gateway_request_duration_seconds",
            "Time from request to response headers (streamed bodies excluded), by route class.",
            ["route_class"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.websockets_open = Gauge(
            "notebook_gateway_websockets_open", "WebSocket connections being relayed now.", registry=self.registry
        )
        self.upstream_errors = Counter(
            "notebook_gateway_upstream_errors",
            "Failures talking to notebook servers, by kind: unavailable, timeout, reset, "
            "refused (a WebSocket upgrade declined).",
            ["kind"],
            registry=self.registry,
        )
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(kind)
        self.policy_reloads_rejected = Counter(
            "notebook_gateway_policy_reloads_rejected",
            "Policy source contents refused (malformed, or suddenly without any rule); the last good policy stays.",
            registry=self.registry,
        )
        self.policy_source_refused = Gauge(
            "notebook_gateway_policy_source_refused",
            "1 while the policy source's current content is refused and an older version stays in force, else 0.",
            registry=self.registry,
        )
        self.rule_limit_refusals = Counter(
            "notebook_gateway_policy_rule_limit_refusals",
            "Grants by namespace admins refused because the namespace (or the admins' share of the "
            "policy store) was full (GATEWAY_NAMESPACE_RULE_LIMIT).",
            registry=self.registry,
        )
        self.signins = Counter(
            "notebook_gateway_signins",
            "Browser sign-ins that ended with a session.",
            registry=self.registry,
        )
        self.signin_failures = Counter(
            "notebook_gateway_signin_failures",
            "Browser sign-ins refused or failed, by reason: the error code the user saw (invalid_callback, "
            "login_failed, not_allowed, invalid_token, idp_unavailable, too_many_requests, ...) or provider_refused.",
            ["reason"],
            registry=self.registry,
        )
        self.authz_denials = Counter(
            "notebook_gateway_authz_denials",
            "Requests the policy refused, by the action asked "
            "(view, connect, create, stop, start, delete, manage, audit).",
            ["action"],
            registry=self.registry,
        )
        self.provider_latency = Histogram(
            "notebook_gateway_idp_request_duration_seconds",
            "Time to the identity provider's response headers, by request: discovery, keys (JWKS), token.",
            ["request"],
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "notebook_gateway_idp_errors",
            "Calls to the identity provider that failed, by request and kind: status (it answered 5xx), "
            "connection (no answer: refused, reset, timed out).",
            ["request", "kind"],
            registry=self.registry,
        )
        for request in PROVIDER_REQUESTS:
            self.provider_latency.labels(request)
            for kind in PROVIDER_ERROR_KINDS:
                self.provider_errors.labels(request, kind)
        self.session_store_latency = Histogram(
            "notebook_gateway_session_store_duration_seconds",
            "Time the session store (Redis, or memory) took to answer, by operation; failures included.",
            ["operation"],
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.session_store_errors = Counter(
            "notebook_gateway_session_store_errors",
            "Session store operations that failed (the store did not answer: a 503 for the request).",
            ["operation"],
            registry=self.registry,
        )
        self.notebook_startup = Histogram(
            "notebook_gateway_notebook_startup_seconds",
            "Time from a notebook server's creation to its first ready state, for servers created while this "
            "replica watched (each replica observes the ones it sees).",
            buckets=STARTUP_BUCKETS,
            registry=self.registry,
        )
        self.active = ActiveUsers(ACTIVE_WINDOW_S)
        Gauge(
            "notebook_gateway_active_users",
            f"Distinct users with a request to this replica in the last {ACTIVE_WINDOW_S // 60} minutes.",
            registry=self.registry,
        ).set_function(self.active.count)
        # The children `observe_request` updates, found once per label set rather than through
        # `labels()` (a lock and label validation) on every request. As bounded as the label sets:
        # four route classes, KNOWN_METHODS + OTHER, the status codes seen.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, route_class: str, method: str, status: int, duration_s: float) -> None:
        """Count one finished request and its latency."""
        label = method if method in KNOWN_METHODS else "OTHER"
        children = self._request_children.get((route_class, label, status))
        if children is None:
            children = (self.requests.labels(route_class, label, str(status)), self.latency.labels(route_class))
            self._request_children[route_class, label, status] = children
        children[0].inc()
        children[1].observe(duration_s)

    def provider_trace(self) -> aiohttp.TraceConfig:
        """A trace for the identity provider's HTTP client: latency to the response headers and failures,
        by kind of request. Set on that client only, never on the upstream one (the hot path)."""
        trace = aiohttp.TraceConfig()

        async def started(_: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
            context.started = time.perf_counter()

        async def ended(
            _: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
        ) -> None:
            kind = provider_request(params.method, params.url.path)
            self.provider_latency.labels(kind).observe(time.perf_counter() - context.started)
            if params.response.status >= 500:
                self.provider_errors.labels(kind, "status").inc()

        async def failed(
            _: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestExceptionParams
        ) -> None:
            kind = provider_request(params.method, params.url.path)
            self.provider_latency.labels(kind).observe(time.perf_counter() - context.started)
            self.provider_errors.labels(kind, "connection").inc()

        trace.on_request_start.append(started)
        trace.on_request_end.append(ended)
        trace.on_request_exception.append(failed)
        trace.freeze()
        return trace

    def timed_sessions(self, store: SessionStore) -> SessionStore:
        """`store`, with each call's time and failures on /metrics."""
        return TimedSessionStore(store, self)

    def watch_activity(self, snapshot: Callable[[], Mapping[tuple[str, str], float]]) -> None:
        """Export each notebook server's last activity, read from `snapshot()` at each scrape."""
        self.registry.register(ActivityCollector(snapshot))

    def watch_audit(self, stats: Callable[[], AuditStats]) -> None:
        """Export the audit log's counts, read from `stats()` at each scrape (the audit log keeps them)."""
        self.registry.register(AuditCollector(stats))


class AuditCollector:
    """The audit log on /metrics: events written, failed writes, the Redis backlog, and whether the
    file can be written now. Every catalogued action and outcome is exported from the start, at zero."""

    def __init__(self, stats: Callable[[], AuditStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        events = CounterMetricFamily(
            "notebook_gateway_audit_events",
            "Audit events written to the audit file, by action and outcome.",
            labels=["action", "outcome"],
        )
        for (action, outcome), count in sorted(stats.written.items()):
            events.add_metric([action, outcome], count)
        yield events
        failures = CounterMetricFamily(
            "notebook_gateway_audit_write_failures",
            "Failed attempts to write audit events, by sink: file (each failed write or retry of the audit file; "
            "it rises while the file cannot be written), redis (each failed attempt to ship to the Redis stream).",
            labels=["sink"],
        )
        for sink, count in sorted(stats.failures.items()):
            failures.add_metric([sink], count)
        yield failures
        yield GaugeMetricFamily(
            "notebook_gateway_audit_writable",
            "1 when the audit file can be written, 0 when not (fail_closed then refuses acts that must be audited).",
            value=1 if stats.writable else 0,
        )
        yield GaugeMetricFamily(
            "notebook_gateway_audit_waiting_events",
            "Audit events held in memory because the audit file cannot be written (lost if the process stops).",
            value=stats.waiting,
        )
        yield CounterMetricFamily(
            "notebook_gateway_audit_dropped_events",
            "Audit events dropped from memory, unwritten, because too many were waiting for the audit file.",
            value=stats.dropped,
        )
        if stats.spooled is not None:  # only with Redis
            yield GaugeMetricFamily(
                "notebook_gateway_audit_spooled_events",
                "Audit events in the audit files not yet in the Redis stream: the backlog replayed when Redis answers.",
                value=stats.spooled,
            )


def provider_request(method: str, path: str) -> str:
    """Which of PROVIDER_REQUESTS a call to the identity provider is: a bounded label, whatever the URL."""
    if method == "POST":
        return "token"
    return "discovery" if path.endswith("/.well-known/openid-configuration") else "keys"


class ActiveUsers:
    """Who made a request lately, for a gauge: one entry per user seen within the window (memory bounded
    by the active users), pruned when counted. Users, never labels: the count is the metric."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self._last_seen: dict[str, float] = {}
        self._prune_at = 1024  # also pruned as it grows, so that memory stays bounded when nobody scrapes

    def seen(self, subject: str) -> None:
        self._last_seen[subject] = self.clock()
        if len(self._last_seen) >= self._prune_at:
            self.count()
            self._prune_at = 2 * len(self._last_seen) + 1024

    def count(self) -> int:
        horizon = self.clock() - self.window_s
        self._last_seen = {who: at for who, at in self._last_seen.items() if at >= horizon}
        return len(self._last_seen)


class TimedSessionStore:
    """A `SessionStore` that times every call of the store it wraps (notebook_gateway_session_store_*)."""

    def __init__(self, store: SessionStore, metrics: Metrics) -> None:
        self.store = store
        latency, errors = metrics.session_store_latency, metrics.session_store_errors
        operations = ("save", "load", "delete", "delete_for", "put_login", "take_login", "revoke", "revoked", "ping")
        # The children found once: `labels()` takes a lock and checks its arguments on every call.
        self._latency = {name: latency.labels(name) for name in operations}
        self._errors = {name: errors.labels(name) for name in operations}

    def _done(self, operation: str, started: float, failed: bool) -> None:
        self._latency[operation].observe(time.perf_counter() - started)
        if failed:
            self._errors[operation].inc()

    async def save(self, session: Session) -> None:
        started, failed = time.perf_counter(), True
        try:
            await self.store.save(session)
            failed = False
        finally:
            self._done("save", started, failed)

    async def load(self, session_id: str, *, touch: bool = True) -> Session | None:
        started, failed = time.perf_counter(), True
        try:
            found = await self.store.load(session_id, touch=touch)
            failed = False
            return found
        finally:
            self._done("load", started, failed)

    async def delete(self, session_id: str) -> None:
        started, failed = time.perf_counter(), True
        try:
            await self.store.delete(session_id)
            failed = False
        finally:
            self._done("delete", started, failed)

    async def delete_for(self, *, provider_sub: str | None = None, provider_sid: str | None = None) -> int:
        started, failed = time.perf_counter(), True
        try:
            ended = await self.store.delete_for(provider_sub=provider_sub, provider_sid=provider_sid)
            failed = False
            return ended
        finally:
            self._done("delete_for", started, failed)

    async def put_login(self, state: str, data: dict[str, str], ttl_s: float) -> None:
        started, failed = time.perf_counter(), True
        try:
            await self.store.put_login(state, data, ttl_s)
            failed = False
        finally:
            self._done("put_login", started, failed)

    async def take_login(self, state: str) -> dict[str, str] | None:
        started, failed = time.perf_counter(), True
        try:
            taken = await self.store.take_login(state)
            failed = False
            return taken
        finally:
            self._done("take_login", started, failed)

    async def revoke(self, marks: Revocation) -> None:
        started, failed = time.perf_counter(), True
        try:
            await self.store.revoke(marks)
            failed = False
        finally:
            self._done("revoke", started, failed)

    async def revoked(self, marks: Revocation) -> bool:
        started, failed = time.perf_counter(), True
        try:
            answer = await self.store.revoked(marks)
            failed = False
            return answer
        finally:
            self._done("revoked", started, failed)

    async def ping(self) -> None:
        started, failed = time.perf_counter(), True
        try:
            await self.store.ping()
            failed = False
        finally:
            self._done("ping", started, failed)


class ActivityCollector:
    """One series per notebook server this replica knows a last activity for. Bounded: only servers the
    proxy routed to (they exist, and the user may connect), dropped when they are stopped or deleted,
    and at most `activity.MAX_TRACKED` unflushed ones."""

    def __init__(self, snapshot: Callable[[], Mapping[tuple[str, str], float]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "notebook_gateway_notebook_last_activity_timestamp_seconds",
            "When a request or WebSocket message last went to the notebook server (Unix time), as this "
            "replica knows it (its own traffic, and other replicas' as read from Redis).",
            labels=["namespace", "notebook"],
        )
        for (namespace, name), timestamp in sorted(self.snapshot().items()):
            family.add_metric([namespace, name], timestamp)
        yield family
