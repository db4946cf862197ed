"""Prometheus metrics, in a registry per application so that several apps (tests) never collide."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from .audit.log import AuditStats

# Any other method a client invents is counted as OTHER, so a scanner cannot grow the label set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The kinds of upstream failure the proxy reports; exported at zero from the start so that
# `rate()` works before the first failure.
UPSTREAM_ERROR_KINDS = ("unavailable", "timeout", "reset", "refused")


class Metrics:
    """Every metric the gateway exports on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_cpu_seconds_total, process_resident_memory_bytes, open fds: per replica health.
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "gateway_requests",
            "Requests handled, by route class (proxy, api, page, health), method and status code.",
            ["route_class", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to response headers (streamed bodies excluded), by route class.",
            ["route_class"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.websockets_open = Gauge(
            "gateway_websockets_open", "WebSocket connections being relayed now.", registry=self.registry
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Failures talking to notebook servers, by kind: unavailable, timeout, reset, "
            "refused (a WebSocket upgrade declined).",
            ["kind"],
            registry=self.registry,
        )
        for kind in UPSTREAM_ERROR_KINDS:
            self.upstream_errors.labels(kind)
        self.policy_reloads_rejected = Counter(
            "gateway_policy_reloads_rejected",
            "Policy source contents refused (malformed, or suddenly without any rule); the last good policy stays.",
            registry=self.registry,
        )
        self.policy_source_refused = Gauge(
            "gateway_policy_source_refused",
            "1 while the policy source's current content is refused and an older version stays in force, else 0.",
            registry=self.registry,
        )
        self.rule_limit_refusals = Counter(
            "gateway_policy_rule_limit_refusals",
            "Grants by namespace admins refused because the namespace (or the admins' share of the "
            "policy store) was full (GATEWAY_NAMESPACE_RULE_LIMIT).",
            registry=self.registry,
        )
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
            "gateway_audit_events",
            "Audit events written to the audit file, by action and outcome.",
            labels=["action", "outcome"],
        )
        for (action, outcome), count in sorted(stats.written.items()):
            events.add_metric([action, outcome], count)
        yield events
        failures = CounterMetricFamily(
            "gateway_audit_write_failures",
            "Failed attempts to write audit events, by sink: file (each failed write or retry of the audit file; "
            "it rises while the file cannot be written), redis (each failed attempt to ship to the Redis stream).",
            labels=["sink"],
        )
        for sink, count in sorted(stats.failures.items()):
            failures.add_metric([sink], count)
        yield failures
        yield GaugeMetricFamily(
            "gateway_audit_writable",
            "1 when the audit file can be written, 0 when not (fail_closed then refuses acts that must be audited).",
            value=1 if stats.writable else 0,
        )
        yield GaugeMetricFamily(
            "gateway_audit_waiting_events",
            "Audit events held in memory because the audit file cannot be written (lost if the process stops).",
            value=stats.waiting,
        )
        yield CounterMetricFamily(
            "gateway_audit_dropped_events",
            "Audit events dropped from memory, unwritten, because too many were waiting for the audit file.",
            value=stats.dropped,
        )
        if stats.spooled is not None:  # only with Redis
            yield GaugeMetricFamily(
                "gateway_audit_spooled_events",
                "Audit events in the audit files not yet in the Redis stream: the backlog replayed when Redis answers.",
                value=stats.spooled,
            )


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
