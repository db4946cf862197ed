"""Prometheus metrics, in a registry per application so that several apps (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

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

    def observe_request(self, route_class: str, method: str, status: int, duration_s: float) -> None:
        """Count one finished request and its latency."""
        label = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(route_class, label, str(status)).inc()
        self.latency.labels(route_class).observe(duration_s)
