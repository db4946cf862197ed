"""`/healthz` (the process is alive), `/readyz` (ready to serve; lists what is not) and `/metrics`.

Kubernetes restarts a pod whose liveness probe fails and stops routing to one whose readiness
probe fails, so `/healthz` checks nothing external: a Redis outage must not restart every replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import keys
from .errors import ServiceUnavailable

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
    body = {
        "ready": not problems,
        "checks": {name: problems.get(name, "ok") for name in READINESS_CHECKS},
        "problems": problems,
    }
    return web.json_response(body, status=503 if problems else 200)


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[keys.METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
