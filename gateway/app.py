"""`create_app(settings)`: the only module that constructs things.

No I/O happens here: resources open in the cleanup contexts, in order, and close in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import jinja2
import redis.asyncio as redis
from aiohttp import WSCloseCode, web
from pydantic import SecretStr
from yarl import URL

from . import health, keys, proxy
from .activity import Activity
from .audit import AuditEvent, AuditLog, session_hash
from .audit.chain import Sealer
from .audit.discovery import LEDGER_FILE, FileLedger, Ledger, NotebookDiscovery, RedisLedger
from .audit.filesink import AuditDirBusy, ChainedFile
from .audit.index import FileIndex
from .audit.redis_sink import RedisSink
from .audit.sampling import RefusalSampler
from .auth.attempts import SignInLimits
from .auth.authenticator import Authenticator, BearerIssuer, ClaimRules
from .auth.oidc import OIDCClient, TokenVerifier
from .authz.configmap import ConfigMapPolicyStore, own_namespace
from .authz.kubeflow import KubeflowPolicies
from .authz.manager import NamespaceClaims, PolicyManager
from .authz.rules import PolicyError
from .authz.stores import FilePolicyStore, MemoryPolicyStore, PolicyStore
from .backends import NotebookBackend
from .backends.kubernetes import KubernetesBackend
from .backends.local import LocalBackend
from .backends.static import StaticBackend
from .config import ConfigError, Settings
from .cookies import CookieSigner
from .culling import Culler, CullPolicy
from .kube.client import KubeClient, KubeConfigError
from .kube.reflector import stop as stop_task
from .logs import REQUEST_ID
from .metrics import Metrics
from .middlewares import authenticate, canonical_path, error_pages, measure, request_context
from .notebook_credentials import MemoryCredentialStore, RedisCredentialStore
from .notebook_form import check_defaults
from .onboarding import Onboarding
from .origins import NotebookOrigins
from .profile_access import ProfileAccess
from .profiles import Provisioner
from .ratelimit import MemoryFailureCounter, RedisFailureCounter
from .redis_connection import close_redis, open_redis
from .session_cache import SessionCache
from .sessions import Expiry, MemorySessionStore, RedisSessionStore, Session
from .spawner import SpawnerConfig
from .upstream_http import UpstreamPool
from .userslots import UserSlots
from .web import (
    api,
    audit_api,
    cli_discovery,
    configurations_api,
    ext_authz,
    limits,
    notebook_details,
    notebook_login,
    openapi,
    pages,
    policies_api,
    profiles_api,
)
from .web import oauth as auth_routes

log = logging.getLogger(__name__)

DEV_IDP_PATH = "/dev-idp"
# Routes served without a session; every other route, the notebook proxy included, needs one.
PUBLIC_ROUTES = (
    frozenset({"healthz", "readyz", "metrics", "static"})
    | auth_routes.PUBLIC
    | ext_authz.PUBLIC
    | pages.PUBLIC
    | notebook_login.PUBLIC
    | cli_discovery.PUBLIC
    | openapi.PUBLIC
)


def create_app(settings: Settings) -> web.Application:
    """Build the gateway for `settings`."""
    if settings.dev_provider:
        exposure = settings.dev_provider_exposure()  # again: `dev` turns it on in an unvalidated copy
        if exposure:
            raise ConfigError([exposure])
        settings = with_dev_provider(settings)
    app = web.Application(
        middlewares=[
            request_context,
            measure,
            error_pages,
            canonical_path,
            notebook_login.notebook_origin,  # which host may serve what: before anyone is identified
            authenticate(public=PUBLIC_ROUTES, public_prefixes=(f"{DEV_IDP_PATH}/", "/static/")),
            limits.refuse_encoded_bodies,
        ],
        # What the gateway reads whole (forms, logout tokens) stops here with a 413. Uploads to
        # notebooks stream through `request.content`, which this cap does not touch.
        client_max_size=settings.body_max_bytes,
        handler_args={
            # Bodies are never inflated by the gateway: the proxy passes them on as the client
            # encoded them, and its own routes refuse encoded ones (web/limits.py).
            "auto_decompress": False,
            # Closes a connection whose request headers have not all arrived in time (one byte a
            # second, or nothing at all) and idle keep-alive connections alike.
            "keepalive_timeout": settings.client_idle_timeout_s,
        },
    )
    app[keys.SETTINGS] = settings
    app[keys.ORIGINS] = build_origins(settings)
    app[keys.METRICS] = Metrics()
    app[keys.AUDIT] = build_audit_log(settings)
    app[keys.METRICS].watch_audit(lambda: app[keys.AUDIT].stats())  # read at each scrape
    kube = build_kube_client(settings)
    if kube is not None:
        app[keys.KUBE] = kube  # opened in `kubernetes`, before any of its users starts
    app[keys.POLICIES] = policy_manager = build_policy_manager(settings, kube)
    app[keys.AUTHZ] = policy_manager.authorizer
    policy_manager.claims = namespace_claims(app)
    app[keys.METRICS].policy_source_refused.set_function(lambda: 0 if policy_manager.problem is None else 1)
    policy_manager.authorizer.on_denied = lambda action: app[keys.METRICS].authz_denials.labels(action).inc()
    app[keys.METRICS].registry.register(health.StateCollector(app))  # watches and notebooks, read at each scrape
    app[keys.WEBSOCKETS] = set()
    app[keys.UPSTREAM_SLOTS] = UserSlots(settings.upstream_requests_per_user, "requests to notebook servers")
    app[keys.WEBSOCKET_SLOTS] = UserSlots(settings.websockets_per_user, "WebSockets")
    app[keys.TEMPLATES] = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway", "web/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app[keys.SPAWNER] = check_defaults(SpawnerConfig.load(settings.spawner_config))
    app[keys.REFUSALS] = RefusalSampler(settings.audit_refusal_clients)
    app.cleanup_ctx.extend(
        [
            health.metrics_listener,
            http_client,
            session_store,
            notebook_credentials,
            audit_log,
            kubernetes,
            refusal_summaries,
            authentication,
            policy_engine,
            notebook_backend,
            notebook_activity,
            idle_culling,
            profiles,
            onboarding,
        ]
    )
    app.on_shutdown.append(close_websockets)
    app.add_routes(
        deferring_continue(
            *health.routes,
            *auth_routes.routes,
            *ext_authz.routes,
            *api.routes,
            *notebook_details.routes,
            *configurations_api.routes,
            *policies_api.routes,
            *profiles_api.routes,
            *audit_api.routes,
            *pages.routes,
            *notebook_login.routes,
            *cli_discovery.routes,
            *openapi.routes,
        )
    )
    app.router.add_static("/static/", pages.STATIC_DIR, name="static", expect_handler=limits.defer_continue)
    if settings.dev_provider:
        # Imported only in dev mode: it signs tokens, which loads pyjwt and cryptography (10 MiB a replica).
        from .auth.devprovider import DevClient, create_dev_provider

        assert settings.oidc_client_secret is not None
        client = DevClient(
            settings.oidc_client_id,
            settings.oidc_client_secret.get_secret_value(),
            redirect_uris=(f"{settings.base_url}/oauth2/callback",),
            post_logout_redirect_uris=(f"{settings.base_url}/",),
        )
        clients = {client.client_id: client}
        if settings.cli_client_id is not None:  # `notebook-gateway login`: public, loopback redirects
            clients[settings.cli_client_id] = DevClient(settings.cli_client_id, None, ("http://127.0.0.1/callback",))
        issuer = f"{settings.base_url}{DEV_IDP_PATH}"
        app.add_subapp(DEV_IDP_PATH, create_dev_provider(issuer, clients))
    # Last: it matches everything. `100 Continue` is sent by the proxy once the request is authorised.
    app.router.add_route("*", "/{tail:.*}", proxy.handle, name=limits.PROXY_ROUTE, expect_handler=limits.defer_continue)
    return app


def deferring_continue(*definitions: web.AbstractRouteDef) -> list[web.AbstractRouteDef]:
    """The route definitions with `Expect: 100-continue` left to their handlers (see web/limits.py)."""
    return [
        web.RouteDef(d.method, d.path, d.handler, {**d.kwargs, "expect_handler": limits.defer_continue})
        if isinstance(d, web.RouteDef)
        else d
        for d in definitions
    ]


def with_dev_provider(settings: Settings) -> Settings:
    """Point sign-in at the built-in development provider, with secrets made for this process."""
    return settings.model_copy(
        update={
            "oidc_issuer": f"{settings.base_url}{DEV_IDP_PATH}",
            "oidc_client_secret": settings.oidc_client_secret or SecretStr(secrets.token_urlsafe(32)),
            "cookie_secret": settings.cookie_secret or SecretStr(secrets.token_urlsafe(32)),
        }
    )


async def http_client(app: web.Application) -> AsyncIterator[None]:
    """One pooled HTTP client for every upstream notebook server, and an unpooled one for WebSockets."""
    settings = app[keys.SETTINGS]
    ws_timeout = aiohttp.ClientTimeout(
        total=None,  # streams and WebSockets may last for hours
        sock_connect=settings.upstream_connect_timeout_s,
        sock_read=settings.upstream_idle_timeout_s,
    )
    # HTTP has a lean client of its own (gateway/upstream_http.py): it forwards exactly the headers it
    # is given, keeps no cookies and passes bodies as the notebook encoded them.
    pool = UpstreamPool(
        connect_timeout_s=settings.upstream_connect_timeout_s,
        read_timeout_s=settings.upstream_idle_timeout_s,
        limit_per_host=256,
        keepalive_s=30,
    )
    try:
        # WebSockets last for hours: in a pool shared with HTTP, one user's sockets could take every
        # connection to a notebook. They get an unpooled client; per-user caps bound them instead.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            timeout=ws_timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        ) as ws_session:
            app[keys.HTTP] = pool
            app[keys.WS_HTTP] = ws_session
            yield
    finally:
        await pool.close()


def build_origins(settings: Settings) -> NotebookOrigins:
    """Which host serves which notebook; single-origin mode is announced loudly, as the pages do."""
    try:
        origins = NotebookOrigins.build(settings.notebook_origins, settings.base_url, settings.notebook_domain)
    except ValueError as exc:
        raise ConfigError(
            [f"GATEWAY_NOTEBOOK_DOMAIN: {exc} (or set GATEWAY_NOTEBOOK_ORIGINS=single, see docs/security.md)"]
        ) from None
    if not origins.isolated:
        log.warning(
            "GATEWAY_NOTEBOOK_ORIGINS=single: notebooks share the gateway's origin, so a notebook's code runs "
            "with the session of whoever opens it (it can act as them in the gateway). Set "
            "GATEWAY_NOTEBOOK_DOMAIN for one origin per notebook; see docs/security.md"
        )
    return origins


async def notebook_credentials(app: web.Application) -> AsyncIterator[None]:
    """Notebook origins' credentials and handshake codes: beside the sessions (Redis, or memory for dev)."""
    client = app.get(keys.REDIS)
    app[keys.CREDENTIALS] = RedisCredentialStore(client) if client is not None else MemoryCredentialStore()
    yield


async def session_store(app: web.Application) -> AsyncIterator[None]:
    """Sessions and failed sign-in counters: in Redis, or in memory for dev."""
    settings = app[keys.SETTINGS]
    expiry = Expiry(idle_s=settings.session_idle_timeout_s, max_age_s=settings.session_max_age_s)
    kind = settings.session_store or ("memory" if settings.dev_provider else "redis")
    clock = app.get(keys.CLOCK, time.time)
    if kind == "memory":
        app[keys.SESSIONS] = app[keys.METRICS].timed_sessions(MemorySessionStore(expiry, clock))
        app[keys.FAILURES] = MemoryFailureCounter(settings.login_failures_max, settings.login_failures_window_s)
        yield
        return
    client = open_redis(settings)
    app[keys.REDIS] = client  # shared: the audit stream lives in the same Redis
    cached = settings.session_cache_s > 0
    store = RedisSessionStore(client, expiry, clock, outage_grace_s=settings.session_outage_grace_s, announce=cached)
    if store.channel is not None:
        store.cache = SessionCache(client, store.channel, max_age_s=settings.session_cache_s)
        listener = asyncio.get_running_loop().create_task(store.cache.run(), name="session-cache")
    app[keys.SESSIONS] = app[keys.METRICS].timed_sessions(store)
    app[keys.FAILURES] = RedisFailureCounter(client, settings.login_failures_max, settings.login_failures_window_s)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        # Start anyway: /readyz reports it, and every request needing a session gets a 503 until it answers.
        log.warning("Redis does not answer yet (%s); sign-ins and sessions get 503 until it does", exc)
    try:
        yield
    finally:
        if store.cache is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        await close_redis(client)


async def authentication(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    if settings.oidc_issuer is None or settings.oidc_client_secret is None or settings.cookie_secret is None:
        raise ConfigError(["GATEWAY_OIDC_ISSUER, GATEWAY_OIDC_CLIENT_SECRET and GATEWAY_COOKIE_SECRET are required"])
    # Its own client: the upstream one passes bodies and headers through untouched, which is wrong
    # for talking to the provider (forms need a Content-Type, JSON may come compressed).
    idp_http = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=15), trace_configs=[app[keys.METRICS].provider_trace()]
    )
    oidc = OIDCClient(
        idp_http,
        issuer=str(settings.oidc_issuer),
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        redirect_uri=f"{settings.base_url}/oauth2/callback",
        scopes=settings.oidc_scopes,
    )
    rules = ClaimRules(
        settings.oidc_username_claim,
        settings.oidc_groups_claim,
        allowed_email_domains=frozenset(settings.oidc_allowed_email_domains),
        allowed_groups=frozenset(settings.oidc_allowed_groups),
        allow_unverified_email=settings.oidc_allow_unverified_email,
    )
    extra_issuers = [
        BearerIssuer(
            TokenVerifier(
                idp_http,
                issuer=extra.issuer,
                jwks_url=str(extra.jwks_url) if extra.jwks_url else None,
                ca_file=extra.ca_file,
                token_file=extra.token_file,
            ),
            frozenset(extra.audiences),
            ClaimRules(extra.username_claim, extra.groups_claim, username_prefix=extra.username_prefix),
        )
        for extra in settings.bearer_issuers
    ]
    app[keys.AUTHENTICATOR] = Authenticator(
        oidc,
        app[keys.SESSIONS],
        CookieSigner(settings.cookie_secret.get_secret_value()),
        rules,
        # The CLI's public client signs people in for scripts: its ID tokens are meant for us too.
        bearer_audiences=frozenset(settings.bearer_audiences)
        | (frozenset({settings.cli_client_id}) if settings.cli_client_id else frozenset()),
        limits=SignInLimits(app[keys.FAILURES]),
        on_refresh_failed=refresh_failed_audit(app),
        extra_issuers=extra_issuers,
        clock=app.get(keys.CLOCK, time.time),
    )
    try:
        yield
    finally:
        await idp_http.close()


def build_kube_client(settings: Settings) -> KubeClient | None:
    """The one Kubernetes client, when something in `settings` calls the API: the kubernetes backend
    (and its profiles), the ConfigMap policy store, Kubeflow's roles. Nothing is opened here."""
    needed = settings.backend == "kubernetes" or settings.policy_store == "configmap" or settings.kubeflow_policies
    return KubeClient(kubeconfig=settings.kubeconfig, context=settings.kube_context) if needed else None


async def open_kube_client(client: KubeClient) -> None:
    """Load the client's configuration; a bad one stops the start, naming the setting to fix."""
    try:
        await client.open()
    except KubeConfigError as exc:
        if client.kubeconfig is not None or client.context is None:
            setting = "GATEWAY_KUBECONFIG"
            if client.kubeconfig is None:
                setting += " (unset, and this is not a pod in a cluster)"
        else:
            setting = "GATEWAY_KUBE_CONTEXT"
        raise ConfigError([f"{setting}: {exc}"]) from None


async def kubernetes(app: web.Application) -> AsyncIterator[None]:
    """The one Kubernetes client: opened before the policy store, the Kubeflow roles, the backend and
    the profiles use it, and closed once after they have all stopped (cleanup runs in reverse)."""
    client = app.get(keys.KUBE)
    if client is None:
        yield
        return
    await open_kube_client(client)
    try:
        yield
    finally:
        await client.close()


def build_policy_manager(settings: Settings, kube: KubeClient | None) -> PolicyManager:
    """The authorizer and what keeps it current; the policy itself is read in `policy_engine`."""
    store: PolicyStore
    if settings.policy_store == "configmap":
        assert kube is not None  # build_kube_client makes one for this
        store = ConfigMapPolicyStore.from_settings(settings, kube)
    else:
        if settings.policy_file is None and not settings.dev_provider:
            log.warning("GATEWAY_POLICY_FILE is not set: policies live in this process's memory and die with it")
        store = FilePolicyStore(settings.policy_file) if settings.policy_file else MemoryPolicyStore()
    kubeflow = KubeflowPolicies(kube) if settings.kubeflow_policies and kube is not None else None
    try:
        return PolicyManager(
            store,
            bootstrap_admins=settings.bootstrap_admins,
            auto_profile=settings.dev_provider if settings.auto_profile is None else settings.auto_profile,
            first_user_admin=settings.first_user_admin,
            reload_interval_s=settings.policy_reload_interval_s,
            external=kubeflow,
        )
    except PolicyError as exc:
        raise ConfigError([f"GATEWAY_BOOTSTRAP_ADMINS: {exc.message}"]) from None


def namespace_claims(app: web.Application) -> NamespaceClaims:
    """What else holds a namespace a sign-in would take as its own: notebook servers in it (a static
    route, a local server, a Notebook), or on Kubernetes the namespace itself or a Kubeflow Profile.
    (The policy's own rules and Kubeflow's roles the manager checks itself.)"""

    async def claimed(namespace: str, owner_name: str) -> str | None:
        backend = app.get(keys.BACKEND)
        if backend is not None and await backend.list(namespace):
            return f"notebook servers are in {namespace}"
        provisioner = app.get(keys.PROFILES)
        return None if provisioner is None else await provisioner.claimed(namespace, owner_name)

    return claimed


async def policy_engine(app: web.Application) -> AsyncIterator[None]:
    """Load the policy before serving (a malformed file stops the start), then watch it for changes."""
    manager = app[keys.POLICIES]
    try:
        await manager.open()
    except (PolicyError, OSError) as exc:
        setting = "GATEWAY_POLICY_CONFIGMAP" if manager.store.kind == "configmap" else "GATEWAY_POLICY_FILE"
        raise ConfigError([f"{setting}: {manager.store.location}: {exc}"]) from None
    watcher = asyncio.create_task(manager.watch(policies_api.reload_audit(app)), name="policy-watcher")
    try:
        yield
    finally:
        await stop_task(watcher)
        await manager.close()


def build_audit_log(settings: Settings) -> AuditLog:
    """The audit log and its file; nothing is opened here (see `audit_log`)."""
    key = settings.audit_hmac_key.get_secret_value().encode() if settings.audit_hmac_key else None
    return AuditLog(
        ChainedFile(settings.audit_dir, Sealer(key), settings.audit_rotate_bytes),
        mode=settings.audit_mode,
        stdout=settings.audit_stdout,
        access_sampling=settings.audit_access_events,
        access_ttl_s=settings.session_max_age_s,  # once per session, however long it lasts
        fsync_interval_s=settings.audit_fsync_interval_s,
    )


async def audit_log(app: web.Application) -> AsyncIterator[None]:
    """The audit file, and what follows it for searches: the Redis stream (when sessions use Redis:
    the cluster-wide view), or else an index of the local files."""
    settings, audit = app[keys.SETTINGS], app[keys.AUDIT]
    file = audit.file
    if file is not None:
        client = app.get(keys.REDIS)
        store: RedisSink | FileIndex
        if client is not None:
            store = RedisSink(
                client,
                file.directory,
                chain_id=lambda: file.chain_id,
                latest_seq=lambda: file.seq,
                max_events=settings.audit_redis_max_events,
                max_age_s=settings.audit_redis_max_age_s,
            )
        else:
            store = FileIndex(file.directory)
        audit.add_sink(store)
        app[keys.AUDIT_STORE] = store
    try:
        await audit.open()
    except AuditDirBusy as exc:
        raise ConfigError([f"GATEWAY_AUDIT_DIR: {exc}"]) from None
    try:
        yield
    finally:
        await audit.close()


async def refusal_summaries(app: web.Application) -> AsyncIterator[None]:
    """Ends each window of anonymous refusals with one `access.denied_summary` (and the last at shutdown)."""

    def summarise() -> None:
        details = app[keys.REFUSALS].drain()
        if details is not None:
            details["window_s"] = app[keys.SETTINGS].audit_refusal_window_s
            reason = f"{details['counted_only']} more anonymous refusal(s) in this window, counted only"
            app[keys.AUDIT].emit_after(
                AuditEvent(action="access.denied_summary", outcome="denied", actor="-", reason=reason, details=details)
            )

    async def every_window() -> None:
        while True:
            await asyncio.sleep(app[keys.SETTINGS].audit_refusal_window_s)
            summarise()

    task = asyncio.create_task(every_window(), name="refusal-summaries")
    try:
        yield
    finally:
        await stop_task(task)
        summarise()


def refresh_failed_audit(app: web.Application) -> Callable[[Session, str, bool], None]:
    """`auth.refresh_failed`, for the authenticator (which knows nothing of requests or the audit log)."""

    def emit(session: Session, reason: str, ended: bool) -> None:
        event = AuditEvent.by(
            session.identity,
            "auth.refresh_failed",
            "failed",
            reason=reason,
            session=session_hash(session.id),
            request_id=REQUEST_ID.get(),
            details={"session_ended": ended},
        )
        app[keys.AUDIT].emit(event)

    return emit


def build_backend(settings: Settings, kube: KubeClient | None, origins: NotebookOrigins) -> NotebookBackend:
    if settings.backend == "local":
        # Jupyter accepts these as Host (besides loopback addresses): the names the gateway is reached at,
        # and each server its own origin's host when notebooks are isolated.
        hostnames = tuple(dict.fromkeys(("localhost", URL(settings.base_url).host or "localhost")))

        def own_host(namespace: str, name: str) -> str | None:
            return URL(origins.origin(namespace, name)).host if origins.isolated else None

        return LocalBackend(settings.local_dir, hostnames=hostnames, notebook_host=own_host)
    if settings.backend == "static":
        assert settings.routes_file is not None  # the settings refuse a static backend without one
        return StaticBackend(settings.routes_file)
    assert kube is not None  # build_kube_client makes one for this backend
    return KubernetesBackend(
        kube,
        cluster_domain=settings.cluster_domain,
        namespaces=settings.namespaces,
        # No PodDefault webhook runs without Kubeflow: the gateway applies the chosen configurations itself.
        apply_poddefaults=settings.profiles == "gateway",
        root_namespaces=frozenset(settings.notebook_root_namespaces),
    )


async def notebook_backend(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    backend = build_backend(settings, app.get(keys.KUBE), app[keys.ORIGINS])
    discovery = None
    if isinstance(backend, KubernetesBackend):
        backend.observer = discovery = notebook_discovery(app)
        backend.on_first_ready = app[keys.METRICS].notebook_startup.observe
    try:
        await backend.open()  # never serve from an empty view
    except ValueError as exc:  # e.g. a malformed routes file: a configuration problem, not a crash
        setting = "GATEWAY_ROUTES_FILE" if settings.backend == "static" else "GATEWAY_BACKEND"
        raise ConfigError([f"{setting}: {exc}"]) from None
    app[keys.BACKEND] = backend
    # Started after the first list, which it then settles: a start that failed leaves no task behind.
    task = asyncio.create_task(discovery.run(), name="notebook-discovery") if discovery is not None else None
    try:
        yield
    finally:
        await backend.close()
        await stop_task(task)


async def notebook_activity(app: web.Application) -> AsyncIterator[None]:
    """Each server's last activity: touched by the proxy, flushed to Redis (when there is one) every few seconds."""
    backend = app[keys.BACKEND]
    activity = Activity(app.get(keys.REDIS), app.get(keys.CLOCK, time.time), alive=backend.route)
    app[keys.ACTIVITY] = activity
    app[keys.METRICS].watch_activity(activity.snapshot)
    activity.start()
    try:
        yield
    finally:
        await activity.close()


async def idle_culling(app: web.Application) -> AsyncIterator[None]:
    """GATEWAY_CULL_IDLE_AFTER: stop servers nobody used for that long (off when unset)."""
    settings = app[keys.SETTINGS]
    if settings.cull_idle_after is None:
        yield
        return
    if settings.backend == "static":
        raise ConfigError(["GATEWAY_CULL_IDLE_AFTER: the static backend cannot stop notebook servers"])
    policy = CullPolicy(settings.cull_idle_after, frozenset(settings.cull_exempt_namespaces), settings.cull_warning_s)
    app[keys.CULLING] = policy
    culler = Culler(
        policy,
        app[keys.BACKEND],
        app[keys.ACTIVITY],
        app[keys.AUDIT],
        app.get(keys.REDIS),
        app.get(keys.CLOCK, time.time),
        interval_s=settings.cull_check_interval_s,
    )
    task = asyncio.create_task(culler.run(), name="idle-culling")
    try:
        yield
    finally:
        await stop_task(task)


def notebook_discovery(app: web.Application) -> NotebookDiscovery:
    """`notebook.discovered` for Notebooks made outside the gateway: once across replicas and restarts
    (a key per uid in Redis) or, without Redis, across restarts (a file in the audit directory)."""
    client = app.get(keys.REDIS)
    ledger: Ledger = (
        RedisLedger(client) if client is not None else FileLedger(app[keys.SETTINGS].audit_dir / LEDGER_FILE)
    )
    return NotebookDiscovery(app[keys.AUDIT], ledger)


async def profiles(app: web.Application) -> AsyncIterator[None]:
    """The profile provisioner (Kubernetes backend only) and its reconcile loop: in gateway mode of the
    gateway's own profiles, in kubeflow mode of the gateway's access to every Profile's namespace."""
    settings = app[keys.SETTINGS]
    if settings.backend != "kubernetes":
        yield
        return
    client = app[keys.KUBE]  # the backend's: made for GATEWAY_BACKEND=kubernetes
    app[keys.PROFILES] = provisioner = Provisioner(
        client, mode=settings.profiles, gateway_namespace=own_namespace(), pod_security=settings.profile_pod_security
    )
    task = None
    if settings.profiles == "gateway":
        task = asyncio.create_task(provisioner.reconcile(settings.profile_reconcile_interval_s), name="profiles")
    else:  # Kubeflow's controller makes the namespaces; the gateway keeps its way in to their notebooks
        access = ProfileAccess(client, gateway_namespace=own_namespace())
        task = asyncio.create_task(access.reconcile(settings.profile_reconcile_interval_s), name="profile-access")
    try:
        yield
    finally:
        await stop_task(task)


async def onboarding(app: web.Application) -> AsyncIterator[None]:
    """What a sign-in sets up, once the policies and (Kubernetes backend) the provisioner are open."""
    app[keys.ONBOARDING] = Onboarding(app[keys.POLICIES], app.get(keys.PROFILES))
    yield


async def close_websockets(app: web.Application) -> None:
    """On shutdown, tell every relayed WebSocket that the gateway is going away (1001)."""
    sockets = [*app[keys.WEBSOCKETS]]
    if sockets:
        log.info("closing %d WebSocket(s) for shutdown", len(sockets))
    with contextlib.suppress(Exception):
        await asyncio.gather(
            *(close(WSCloseCode.GOING_AWAY, b"gateway shutting down") for close in sockets),
            return_exceptions=True,
        )
