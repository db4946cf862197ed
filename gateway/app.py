"""`create_app(settings)`: the only module that constructs things.

No I/O happens here: resources open in the cleanup contexts, in order, and close in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable

import aiohttp
import jinja2
import redis.asyncio as redis
from aiohttp import WSCloseCode, web
from pydantic import SecretStr

from . import health, keys, proxy
from .audit import AuditEvent, AuditLog, session_hash
from .audit.chain import Sealer
from .audit.discovery import LEDGER_FILE, FileLedger, Ledger, NotebookDiscovery, RedisLedger
from .audit.filesink import AuditDirBusy, ChainedFile
from .audit.index import FileIndex
from .audit.redis_sink import RedisSink
from .auth.authenticator import Authenticator, BearerIssuer, ClaimRules
from .auth.devprovider import DevClient, create_dev_provider
from .auth.oidc import OIDCClient, TokenVerifier
from .authz.configmap import ConfigMapPolicyStore, own_namespace
from .authz.kubeflow import KubeflowPolicies
from .authz.manager import PolicyManager
from .authz.rules import PolicyError
from .authz.stores import FilePolicyStore, MemoryPolicyStore, PolicyStore
from .backends import NotebookBackend
from .backends.kubernetes import KubernetesBackend
from .backends.local import LocalBackend
from .backends.static import StaticBackend
from .config import ConfigError, Settings
from .cookies import CookieSigner
from .kube.client import KubeClient, KubeConfigError
from .kube.reflector import stop as stop_task
from .logs import REQUEST_ID
from .metrics import Metrics
from .middlewares import authenticate, canonical_path, error_pages, measure, request_context
from .profiles import Provisioner
from .ratelimit import MemoryFailureCounter, RedisFailureCounter
from .sessions import Expiry, MemorySessionStore, RedisSessionStore, Session
from .spawner import SpawnerConfig
from .web import api, audit_api, configurations_api, ext_authz, pages, policies_api, profiles_api
from .web import oauth as auth_routes

log = logging.getLogger(__name__)

DEV_IDP_PATH = "/dev-idp"
# Routes served without a session; every other route, the notebook proxy included, needs one.
PUBLIC_ROUTES = (
    frozenset({"healthz", "readyz", "metrics", "static"}) | auth_routes.PUBLIC | ext_authz.PUBLIC | pages.PUBLIC
)


def create_app(settings: Settings) -> web.Application:
    """Build the gateway for `settings`."""
    if settings.dev_provider:
        settings = with_dev_provider(settings)
    app = web.Application(
        middlewares=[
            request_context,
            measure,
            error_pages,
            canonical_path,
            authenticate(public=PUBLIC_ROUTES, public_prefixes=(f"{DEV_IDP_PATH}/", "/static/")),
        ],
        # Uploads are streamed to the notebook, never read whole, so no size cap applies to them.
        client_max_size=0,
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = Metrics()
    app[keys.AUDIT] = build_audit_log(settings)
    app[keys.METRICS].watch_audit(lambda: app[keys.AUDIT].stats())  # read at each scrape
    app[keys.POLICIES] = policy_manager = build_policy_manager(settings)
    app[keys.AUTHZ] = policy_manager.authorizer
    app[keys.WEBSOCKETS] = set()
    app[keys.TEMPLATES] = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway", "web/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app[keys.SPAWNER] = SpawnerConfig.load(settings.spawner_config)
    app.cleanup_ctx.extend(
        [http_client, session_store, audit_log, authentication, policy_engine, notebook_backend, profiles]
    )
    app.on_shutdown.append(close_websockets)
    app.add_routes(
        [
            *health.routes,
            *auth_routes.routes,
            *ext_authz.routes,
            *api.routes,
            *configurations_api.routes,
            *policies_api.routes,
            *profiles_api.routes,
            *audit_api.routes,
            *pages.routes,
        ]
    )
    app.router.add_static("/static/", pages.STATIC_DIR, name="static")
    if settings.dev_provider:
        assert settings.oidc_client_secret is not None
        client = DevClient(
            settings.oidc_client_id,
            settings.oidc_client_secret.get_secret_value(),
            redirect_uris=(f"{settings.base_url}/oauth2/callback",),
            post_logout_redirect_uris=(f"{settings.base_url}/",),
        )
        issuer = f"{settings.base_url}{DEV_IDP_PATH}"
        app.add_subapp(DEV_IDP_PATH, create_dev_provider(issuer, {client.client_id: client}))
    app.router.add_route("*", "/{tail:.*}", proxy.handle, name="proxy")  # last: it matches everything
    return app


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
    """One pooled client for every upstream notebook server."""
    settings = app[keys.SETTINGS]
    timeout = aiohttp.ClientTimeout(
        total=None,  # streams and WebSockets may last for hours
        sock_connect=settings.upstream_connect_timeout_s,
        sock_read=settings.upstream_idle_timeout_s,
    )
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=30)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,  # bodies pass through as the notebook encoded them
        cookie_jar=aiohttp.DummyCookieJar(),  # the gateway keeps no upstream cookies of its own
        # Forward exactly what the client sent: add none of aiohttp's default headers.
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
    ) as session:
        app[keys.HTTP] = session
        yield


async def session_store(app: web.Application) -> AsyncIterator[None]:
    """Sessions and failed sign-in counters: in Redis, or in memory for dev."""
    settings = app[keys.SETTINGS]
    expiry = Expiry(idle_s=settings.session_idle_timeout_s, max_age_s=settings.session_max_age_s)
    kind = settings.session_store or ("memory" if settings.dev_provider else "redis")
    if kind == "memory":
        app[keys.SESSIONS] = MemorySessionStore(expiry)
        app[keys.FAILURES] = MemoryFailureCounter(settings.login_failures_max, settings.login_failures_window_s)
        yield
        return
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=5, socket_connect_timeout=5)
    app[keys.REDIS] = client  # shared: the audit stream lives in the same Redis
    app[keys.SESSIONS] = RedisSessionStore(client, expiry)
    app[keys.FAILURES] = RedisFailureCounter(client, settings.login_failures_max, settings.login_failures_window_s)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        # Start anyway: /readyz reports it, and every request needing a session gets a 503 until it answers.
        log.warning("Redis does not answer yet (%s); sign-ins and sessions get 503 until it does", exc)
    try:
        yield
    finally:
        await client.aclose()


async def authentication(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    if settings.oidc_issuer is None or settings.oidc_client_secret is None or settings.cookie_secret is None:
        raise ConfigError(["GATEWAY_OIDC_ISSUER, GATEWAY_OIDC_CLIENT_SECRET and GATEWAY_COOKIE_SECRET are required"])
    # Its own client: the upstream one passes bodies and headers through untouched, which is wrong
    # for talking to the provider (forms need a Content-Type, JSON may come compressed).
    idp_http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
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
        bearer_audiences=frozenset(settings.bearer_audiences),
        on_refresh_failed=refresh_failed_audit(app),
        extra_issuers=extra_issuers,
    )
    try:
        yield
    finally:
        await idp_http.close()


def build_policy_manager(settings: Settings) -> PolicyManager:
    """The authorizer and what keeps it current; the policy itself is read in `policy_engine`."""
    store: PolicyStore
    if settings.policy_store == "configmap":
        store = ConfigMapPolicyStore.from_settings(settings)
    else:
        if settings.policy_file is None and not settings.dev_provider:
            log.warning("GATEWAY_POLICY_FILE is not set: policies live in this process's memory and die with it")
        store = FilePolicyStore(settings.policy_file) if settings.policy_file else MemoryPolicyStore()
    kubeflow = (
        KubeflowPolicies(kubeconfig=settings.kubeconfig, context=settings.kube_context)
        if settings.kubeflow_policies
        else None
    )
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
        await stop_task(watcher, None)
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


def build_backend(settings: Settings) -> NotebookBackend:
    if settings.backend == "local":
        return LocalBackend(settings.local_dir)
    if settings.backend == "static":
        if settings.routes_file is None:
            raise ConfigError(["GATEWAY_ROUTES_FILE: required when GATEWAY_BACKEND=static"])
        return StaticBackend(settings.routes_file)
    # The client is configured in open(), inside notebook_backend: loading a kubeconfig is async.
    return KubernetesBackend(
        kubeconfig=settings.kubeconfig,
        context=settings.kube_context,
        cluster_domain=settings.cluster_domain,
        namespaces=settings.namespaces,
        # No PodDefault webhook runs without Kubeflow: the gateway applies the chosen configurations itself.
        apply_poddefaults=settings.profiles == "gateway",
        root_namespaces=frozenset(settings.notebook_root_namespaces),
    )


async def notebook_backend(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    backend = build_backend(settings)
    discovery = None
    if isinstance(backend, KubernetesBackend):
        backend.observer = discovery = notebook_discovery(app)
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
        await stop_task(task, None)


def notebook_discovery(app: web.Application) -> NotebookDiscovery:
    """`notebook.discovered` for Notebooks made outside the gateway: once across replicas and restarts
    (a key per uid in Redis) or, without Redis, across restarts (a file in the audit directory)."""
    client = app.get(keys.REDIS)
    ledger: Ledger = (
        RedisLedger(client) if client is not None else FileLedger(app[keys.SETTINGS].audit_dir / LEDGER_FILE)
    )
    return NotebookDiscovery(app[keys.AUDIT], ledger)


async def profiles(app: web.Application) -> AsyncIterator[None]:
    """The profile provisioner (Kubernetes backend only) and, in gateway mode, its reconcile loop."""
    settings = app[keys.SETTINGS]
    if settings.backend != "kubernetes":
        yield
        return
    try:
        client = await KubeClient.connect(kubeconfig=settings.kubeconfig, context=settings.kube_context)
    except KubeConfigError as exc:
        raise ConfigError([f"GATEWAY_KUBECONFIG: {exc}"]) from None
    app[keys.PROFILES] = provisioner = Provisioner(
        client, mode=settings.profiles, gateway_namespace=own_namespace(), pod_security=settings.profile_pod_security
    )
    task = None
    if settings.profiles == "gateway":
        task = asyncio.create_task(provisioner.reconcile(settings.profile_reconcile_interval_s), name="profiles")
    try:
        yield
    finally:
        await stop_task(task, client)


async def close_websockets(app: web.Application) -> None:
    """On shutdown, tell every relayed WebSocket that the gateway is going away (1001)."""
    sockets = [*app[keys.WEBSOCKETS]]
    if sockets:
        log.info("closing %d WebSocket(s) for shutdown", len(sockets))
    with contextlib.suppress(Exception):
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down") for ws in sockets),
            return_exceptions=True,
        )
