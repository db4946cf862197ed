"""Every typed key the application and its requests hold: the gateway's state at a glance."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import jinja2
import redis.asyncio as redis
from aiohttp import web

from .activity import Activity
from .audit import AuditLog
from .audit.query import AuditStore
from .audit.sampling import RefusalSampler
from .auth.authenticator import Authenticator
from .authz.authorizer import Authorizer
from .authz.manager import PolicyManager
from .backends import NotebookBackend
from .config import Settings
from .culling import CullPolicy
from .identity import Identity
from .kube.client import KubeClient
from .metrics import Metrics
from .notebook_credentials import CredentialStore
from .onboarding import Onboarding
from .origins import NotebookOrigins
from .profiles import Provisioner
from .ratelimit import FailureCounter
from .routing import NotebookPath
from .sessions import Session, SessionStore
from .spawner import SpawnerConfig
from .upstream_http import UpstreamPool
from .userslots import UserSlots

SETTINGS = web.AppKey("settings", Settings)
HTTP = web.AppKey("http", UpstreamPool)  # one pooled HTTP client for every upstream
# Upstream WebSockets get a client of their own, so long-lived sockets never take HTTP's pooled connections.
WS_HTTP = web.AppKey("ws_http", aiohttp.ClientSession)
UPSTREAM_SLOTS = web.AppKey("upstream_slots", UserSlots)  # per user: notebook requests in flight
WEBSOCKET_SLOTS = web.AppKey("websocket_slots", UserSlots)  # per user: open WebSockets
BACKEND = web.AppKey("backend", NotebookBackend)
AUTHZ = web.AppKey("authz", Authorizer)
POLICIES = web.AppKey("policies", PolicyManager)  # the policy store, its reload, and the authorizer it feeds
PROFILES = web.AppKey("profiles", Provisioner)  # absent unless GATEWAY_BACKEND=kubernetes
# The one Kubernetes client, shared by everything that calls the API (absent when nothing does).
KUBE = web.AppKey("kube", KubeClient)
AUDIT = web.AppKey("audit", AuditLog)
REFUSALS = web.AppKey("refusals", RefusalSampler)  # anonymous 401s: first per client per window, then counts
AUDIT_STORE = web.AppKey("audit_store", AuditStore)  # where GET /api/audit reads: Redis, or the local files
REDIS = web.AppKey("redis", redis.Redis)  # the one Redis client (absent with memory sessions)
METRICS = web.AppKey("metrics", Metrics)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
SPAWNER = web.AppKey("spawner", SpawnerConfig)
SESSIONS = web.AppKey("sessions", SessionStore)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
FAILURES = web.AppKey("failures", FailureCounter)  # failed sign-ins per client IP / username
# The wall clock sessions are timed by (time.time); set before start-up only by tests that walk through timeouts.
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
ONBOARDING = web.AppKey("onboarding", Onboarding)  # what a sign-in sets up: first-user admin, self-service profile
# How to close each open WebSocket (code, reason): with 1001 (going away) when the gateway shuts down.
WEBSOCKETS: web.AppKey[set[Callable[[int, bytes], Awaitable[None]]]] = web.AppKey("websockets")
ORIGINS = web.AppKey("origins", NotebookOrigins)  # which host serves which notebook
ACTIVITY = web.AppKey("activity", Activity)  # each notebook server's last use, shared by replicas through Redis
CULLING = web.AppKey("culling", CullPolicy)  # absent unless GATEWAY_CULL_IDLE_AFTER is set
CREDENTIALS = web.AppKey("credentials", CredentialStore)  # notebook origins' credentials and handshake codes

REQUEST_ID = web.RequestKey("request_id", str)  # always the gateway's own: what the audit log records
CLIENT_REQUEST_ID = web.RequestKey("client_request_id", str)  # an X-Request-Id the client sent (access log only)
CLIENT_IP = web.RequestKey("client_ip", str)  # the peer, or the client behind a trusted proxy
IDENTITY = web.RequestKey("identity", Identity)
SESSION = web.RequestKey("session", Session)  # absent for bearer-token and public requests
# The result of the one canonical path parse; None when the path names no notebook.
NOTEBOOK_PATH: web.RequestKey[NotebookPath | None] = web.RequestKey("notebook_path")
# Seconds from sending a proxied request to the notebook's response headers (the access log's upstream_ms).
UPSTREAM_S = web.RequestKey("upstream_s", float)
CONTINUED = web.RequestKey("continued", bool)  # `100 Continue` was sent (see web/limits.py)
# Set when the request came to a notebook's own origin (isolated mode): that origin, e.g. https://nb1--alice.nb.example.com
NOTEBOOK_ORIGIN = web.RequestKey("notebook_origin", str)
