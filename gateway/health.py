"""`/healthz` (the process is alive), `/readyz` (ready to serve; lists what is not) and `/metrics`
(on the user port, or on a listener of its own with GATEWAY_METRICS_PORT).

Kubernetes restarts a pod whose liveness probe fails and stops routing to one whose readiness
probe fails, so `/healthz` checks nothing external: a Redis outage must not restart every replica.
Likewise a watch of the Kubernetes API makes a replica unready only until its first list: after
that, an API outage is reported as `degraded` (the last view keeps serving) but leaves it ready,
or every replica would drop out of the Service at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Literal, get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from . import keys
from .backends import Phase
from .errors import NotFound, ServiceUnavailable
from .kube.watch_health import WatchHealth

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# One check per dependency: None when it is fine, else a sentence saying what is wrong. Checks
# may do I/O (a Redis PING, later); each gets CHECK_TIMEOUT_S, so a hung dependency reads as
# "not ready" well before the kubelet's probe timeout.
ReadinessCheck = Callable[[web.Application], Awaitable[str | None]]
CHECK_TIMEOUT_S = 2.0


async def backend_synced(app: web.Application) -> str | None:
    backend = app.get(keys.BACKEND)
    if backend is None:
        return "the notebook backend has not started"
    if not backend.synced:
        return f"the {backend.name} backend has not synced its notebook list yet"
    return None


async def upstream_client_open(app: web.Application) -> str | None:
    client = app.get(keys.HTTP)
    if client is None or client.closed:
        return "the upstream HTTP client is not open"
    return None


async def sessions_answer(app: web.Application) -> str | None:
    """Redis (in `serve`): without it nobody can be identified, so this replica cannot serve."""
    store = app.get(keys.SESSIONS)
    if store is None:
        return "the session store has not started"
    try:
        await store.ping()
    except ServiceUnavailable as exc:
        return f"the session store does not answer: {exc.message}"
    return None


async def audit_writable(app: web.Application) -> str | None:
    """The audit file: while it cannot be written, must-audit acts are refused (fail_closed)."""
    audit = app.get(keys.AUDIT)
    if audit is None:
        return "the audit log has not started"
    problem = audit.problem()
    if problem is not None and audit.mode == "best_effort":
        return None  # still serving everything; the problem is in the log, and events wait in memory
    return problem


READINESS_CHECKS: dict[str, ReadinessCheck] = {
    "backend": backend_synced,
    "upstream_client": upstream_client_open,
    "sessions": sessions_answer,
    "audit": audit_writable,
}


# One per watch of the Kubernetes API: its state, or None where this gateway has no such watch. Each
# asks its component's protocol (`watch_health()`), so a new implementation needs no change here.
WatchState = Callable[[web.Application], WatchHealth | None]


def notebook_watch(app: web.Application) -> WatchHealth | None:
    """The Notebook (and event) watches behind the route table."""
    backend = app.get(keys.BACKEND)
    return backend.watch_health() if backend is not None else None


def policy_watch(app: web.Application) -> WatchHealth | None:
    """The policy ConfigMap's watch (GATEWAY_POLICY_STORE=configmap)."""
    manager = app.get(keys.POLICIES)
    return manager.store.watch_health() if manager is not None else None


def kubeflow_watch(app: web.Application) -> WatchHealth | None:
    """The Profile and RoleBinding watches (GATEWAY_KUBEFLOW_POLICIES): until they have listed, every
    role Kubeflow gives is missing and its users are refused."""
    manager = app.get(keys.POLICIES)
    source = manager.external if manager is not None else None
    return source.watch_health() if source is not None else None


WATCHES: dict[str, WatchState] = {
    "notebook_watch": notebook_watch,
    "policy_watch": policy_watch,
    "kubeflow_watch": kubeflow_watch,
}


WatchStatus = Literal["ok", "degraded", "not_synced"]


def describe_watch(health: WatchHealth, age_s: float | None) -> tuple[WatchStatus, str]:
    """`not_synced` (not ready: nothing to serve from yet), `degraded` (ready, serving the last view
    while the API does not answer) or `ok`; and a sentence for people."""
    if not health.synced:
        message = f"the first list of {health.subject} has not come from the Kubernetes API yet"
        return "not_synced", message + (f" ({health.error})" if health.error else "")
    if health.error is not None:
        since = "" if age_s is None else f", last answered {age_s:g}s ago"
        return "degraded", f"cannot watch {health.subject} ({health.error}); serving the last view{since}"
    return "ok", "ok"


async def run_check(check: ReadinessCheck, app: web.Application) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check(app)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g}s"
    except Exception as exc:  # a failing check means "not ready", never a 500 from the probe
        log.warning("readiness check %s failed: %r", getattr(check, "__name__", check), exc)
        return f"check failed: {type(exc).__name__}"


@routes.get("/healthz", name="healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz", name="readyz")
async def readyz(request: web.Request) -> web.Response:
    results = await asyncio.gather(*(run_check(check, request.app) for check in READINESS_CHECKS.values()))
    problems = {name: problem for name, problem in zip(READINESS_CHECKS, results, strict=True) if problem is not None}
    checks = {name: problems.get(name, "ok") for name in READINESS_CHECKS}
    now = time.time()
    watches: dict[str, dict[str, object]] = {}
    degraded: dict[str, str] = {}
    for name, read in WATCHES.items():
        health = read(request.app)
        if health is None:
            continue  # no such watch in this gateway
        age_s = None if health.last_ok is None else round(max(now - health.last_ok, 0.0), 1)
        state, message = describe_watch(health, age_s)
        watches[name] = {"state": state, "last_sync_age_s": age_s, "error": health.error}
        if state == "not_synced":
            problems[name] = checks[name] = message
        elif state == "degraded":
            degraded[name] = message
            checks[name] = f"degraded: {message}"
        else:
            checks[name] = "ok"
    policies = request.app.get(keys.POLICIES)
    if policies is not None and policies.problem is not None:  # ready: the last good policy serves
        degraded["policy"] = policies.problem
        checks["policy"] = f"degraded: {policies.problem}"
    body = {"ready": not problems, "checks": checks, "problems": problems, "degraded": degraded, "watches": watches}
    return web.json_response(body, status=503 if problems else 200)


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    if request.app[keys.SETTINGS].metrics_port is not None:
        raise NotFound("Metrics are served on the metrics port.")  # not to whoever reaches the user port
    return exposition(request.app)


def exposition(app: web.Application) -> web.Response:
    body = generate_latest(app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """GATEWAY_METRICS_PORT: a second listener in this process that serves `/metrics` and nothing else,
    so that the NetworkPolicy can admit the monitoring namespace to it alone."""
    settings = app[keys.SETTINGS]
    if settings.metrics_port is None:
        yield
        return

    async def scrape(_: web.Request) -> web.Response:
        return exposition(app)

    listener = web.Application()
    listener.router.add_get("/metrics", scrape)
    runner = web.AppRunner(listener, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.metrics_port).start()
        log.info("serving /metrics on %s:%s", settings.host, settings.metrics_port)
        yield
    finally:
        await runner.cleanup()


class StateCollector:
    """What /readyz knows, on /metrics at each scrape: every watch's state and how long since the
    Kubernetes API last answered it, and the notebook servers by phase."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app, now = self.app, time.time()
        state = GaugeMetricFamily(
            "notebook_gateway_watch_state",
            "1 for each Kubernetes watch's current state (ok, degraded: the API does not answer and the last "
            "view serves, not_synced: the first list has not come), else 0.",
            labels=["watch", "state"],
        )
        age = GaugeMetricFamily(
            "notebook_gateway_watch_last_sync_age_seconds",
            "Seconds since the Kubernetes API last answered the watch that has gone longest without (its lag).",
            labels=["watch"],
        )
        for name, read in WATCHES.items():
            health = read(app)
            if health is None:
                continue
            age_s = None if health.last_ok is None else max(now - health.last_ok, 0.0)
            current, _ = describe_watch(health, age_s)
            for each in get_args(WatchStatus):
                state.add_metric([name, each], 1 if each == current else 0)
            if age_s is not None:
                age.add_metric([name], age_s)
        yield state
        yield age
        phases = GaugeMetricFamily(
            "notebook_gateway_notebooks",
            "Notebook servers the backend knows now, by phase (ready, waiting, stopped, warning, terminating, "
            "unavailable).",
            labels=["phase"],
        )
        backend = app.get(keys.BACKEND)
        counts = backend.phase_counts() if backend is not None else {}
        for phase in get_args(Phase):
            phases.add_metric([phase], counts.get(phase, 0))
        yield phases
