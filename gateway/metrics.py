"""Prometheus metrics, in a registry per application so that several apps (tests) never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Every metric the gateway exports on /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "Requests handled, by route class (proxy, api, page, health) and status code.",
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
            "Failures talking to notebook servers, by kind (unavailable, timeout, reset).",
            ["kind"],
            registry=self.registry,
        )
