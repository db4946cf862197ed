"""Everything the gateway reads from its environment, validated once at startup.

Sources, strongest first: explicit arguments, `GATEWAY_*` environment variables, then the TOML
file given with `--config` (flat keys: `port = 8080`). This is the only module that reads either.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .names import is_dns_label, is_dns_subdomain

ENV_PREFIX = "GATEWAY_"


def parse_origin(value: str) -> str:
    """`scheme://host[:port]` (http or https, no path, query, fragment or credentials), lower-cased;
    a `ValueError` says what else it was."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port  # a bad port raises here
    except ValueError:
        raise ValueError(f"{value!r} is not an origin such as https://kubeflow.example.com") from None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"{value!r} is not an origin such as https://kubeflow.example.com (scheme and host only)")
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal, written in brackets
        try:
            host = f"[{ipaddress.IPv6Address(host)}]"
        except ValueError:
            raise ValueError(f"{value!r} has a host that is not an IPv6 address") from None
    elif not is_dns_subdomain(host):  # so nothing but a name goes into a header (no ';', space or '*')
        raise ValueError(f"{value!r} has a host that is not a DNS name or an IP address")
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BearerIssuer(BaseModel):
    """Another issuer whose JWTs API clients may present, e.g. the cluster's service-account tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Kept exactly as written: a token's `iss` must equal it (a URL type would add a trailing slash).
    issuer: str = Field(pattern=r"^https?://[^\s/]+")
    audiences: tuple[str, ...] = Field(min_length=1)  # a token for someone else must not open the gateway
    # Required, so that choosing "" (the issuer's users share names with the provider's) is deliberate.
    username_prefix: str
    username_claim: str = "sub"
    groups_claim: str = "groups"
    jwks_url: AnyHttpUrl | None = None  # instead of discovery, e.g. https://kubernetes.default.svc/openid/v1/jwks
    ca_file: Path | None = None  # a private CA for the issuer's HTTPS
    token_file: Path | None = None  # sent as a bearer token when fetching keys (a Kubernetes API server wants one)


class RedisAddress(BaseModel, frozen=True):
    """`host:port` of a Redis Sentinel (`[v6:addr]:port` for IPv6)."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)

    @classmethod
    def parse(cls, text: str) -> RedisAddress:
        host, sep, port = text.strip().rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{text.strip()!r} is not host:port")
        return cls(host=host.strip("[]"), port=int(port))


class SecretFiles(PydanticBaseSettingsSource):
    """`GATEWAY_<NAME>_FILE=/path` for every secret setting: the value is the file's content (one trailing newline
    dropped), as Kubernetes and Docker mount secrets, so a secret need not sit in the process environment.

    Naming both `GATEWAY_<NAME>` and `GATEWAY_<NAME>_FILE` is refused rather than one silently winning; an
    unreadable file is a `ConfigError` naming the variable, never the content.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__, which sees every field at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        problems = []
        for name, field in self.settings_cls.model_fields.items():
            variable = f"{ENV_PREFIX}{name.upper()}"
            path = os.environ.get(f"{variable}_FILE")
            if path is None:
                continue
            if not _is_secret(field):
                problems.append(f"{variable}_FILE: only secret settings are read from files; set {variable}")
                continue
            if variable in os.environ:
                problems.append(f"{variable}_FILE: {variable} is set too; set one of them")
                continue
            try:
                values[name] = Path(path).read_text().removesuffix("\n").removesuffix("\r")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{variable}_FILE: cannot read {path}: {exc.__class__.__name__}")
        if problems:
            raise ConfigError(problems)
        return values


def _is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr or SecretStr in get_args(field.annotation)


class Settings(BaseSettings):
    """The gateway's configuration. Field docs are the configuration reference (see `describe()`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve `/metrics` on this port (a second listener on GATEWAY_HOST) and answer 404 for it on "
        "the user port. Unset: `/metrics` on the user port.",
    )
    public_url: AnyHttpUrl | None = Field(
        None,
        description="URL users reach the gateway at (scheme, host, port). Default: http://<host>:<port>.",
    )
    backend: Literal["local", "static", "kubernetes"] = Field(
        "kubernetes",
        description="Where notebook servers live: `local` Jupyter processes (dev), "
        "`static` fixed routes from GATEWAY_ROUTES_FILE, or `kubernetes` Notebook resources.",
    )
    routes_file: FilePath | None = Field(
        None,
        validate_default=True,  # so that its absence is checked: the static backend needs it
        description="TOML file of [[route]] namespace/name/url entries for the static backend.",
    )
    local_dir: Path = Field(
        Path(".dev/notebooks"),
        description="Where the local backend keeps its records, workspaces and server logs.",
    )
    spawner_config: FilePath | None = Field(
        None,
        description="Spawner form defaults in the shape of Kubeflow's spawner_ui_config.yaml. "
        "Default: the copy shipped with the gateway.",
    )
    kubeconfig: Path | None = Field(
        None,
        description="Kubeconfig file for the kubernetes backend. Unset: the pod's service account when "
        "in a cluster, else the default kubeconfig (as kubectl).",
    )
    kube_context: str | None = Field(None, description="Context in the kubeconfig to use. Default: its current one.")
    cluster_domain: str = Field(
        "cluster.local",
        description="The cluster's DNS domain: notebooks are reached at http://<name>.<namespace>.svc.<domain>:80.",
    )
    namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Namespaces whose notebooks the kubernetes backend serves (comma-separated). "
        "Unset: every namespace (cluster-wide watch).",
    )
    upstream_connect_timeout_s: float = Field(5.0, gt=0, description="Connecting to a notebook server.")
    upstream_timeout_s: float = Field(
        60.0, gt=0, description="From sending a request upstream until its response headers arrive."
    )
    upstream_idle_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="Longest silence inside a streamed response body (long-poll, SSE) before it is cut.",
    )
    event_loop: Literal["auto", "asyncio"] = Field(
        "auto",
        description="`auto`: uvloop when it is installed (the `fast` extra), else asyncio's own loop; `asyncio`: "
        "always asyncio's.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="`serve` as this many worker processes on one port (SO_REUSEPORT), to use that many cores: each "
        "a whole gateway sharing sessions through Redis, with its own audit chain in GATEWAY_AUDIT_DIR/worker-<i>. "
        "Redis sessions only; not with the local backend. See docs/operators.md.",
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    # NoDecode: the variable is a plain comma-separated list, not JSON.
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        (),
        description="Peers (IPs or CIDRs, comma-separated) whose X-Forwarded-* headers are believed.",
    )
    oidc_issuer: AnyHttpUrl | None = Field(
        None,
        description="OpenID provider's issuer URL (discovery at <issuer>/.well-known/openid-configuration). "
        "Required by `serve`; `dev` uses its built-in development provider when unset.",
    )
    dev_provider: bool = Field(
        False,
        description="Serve the built-in development OpenID provider at /dev-idp and sign in with it "
        "(any username and password). `dev` turns it on when GATEWAY_OIDC_ISSUER is unset; `serve` refuses it.",
    )
    oidc_client_id: str = Field("notebook-gateway", description="OAuth client id registered at the provider.")
    oidc_client_secret: SecretStr | None = Field(None, description="OAuth client secret (never logged).")
    oidc_scopes: Annotated[tuple[str, ...], NoDecode] = Field(
        ("openid", "email", "profile", "groups"), description="Scopes to request (space- or comma-separated)."
    )
    oidc_username_claim: str = Field("email", description="ID-token claim that names the user.")
    oidc_groups_claim: str = Field("groups", description="ID-token claim that lists the user's groups.")
    cli_client_id: str | None = Field(
        None,
        description="A public OAuth client (no secret; loopback redirect http://127.0.0.1/callback on any port, "
        "and the device flow if the provider has it) registered at the provider for `notebook-gateway login`. "
        "Served at /.well-known/notebook-gateway, and accepted as an audience of bearer tokens. "
        "`dev` registers `notebook-gateway-cli` with its development provider.",
    )
    bearer_audiences: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Audiences accepted in bearer tokens besides the client id (comma-separated).",
    )
    bearer_issuers: tuple[BearerIssuer, ...] = Field(
        (),
        description="Other issuers whose JWTs API clients may present: a JSON list (TOML: [[bearer_issuers]]) of "
        "{issuer, audiences, username_prefix, username_claim (sub), groups_claim (groups), jwks_url, ca_file, "
        "token_file}. See docs/identity-providers.md.",
    )
    oidc_allowed_email_domains: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Only users whose verified email is in one of these domains may sign in (comma-separated). "
        "Empty: any.",
    )
    oidc_allowed_groups: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Only members of at least one of these groups may sign in (comma-separated). Empty: any."
    )
    oidc_allow_unverified_email: bool = Field(
        False,
        description="Accept a user whose ID token says email_verified=false (the username claim being email). "
        "Off: such a sign-in is refused, as oauth2-proxy does.",
    )
    cookie_secret: SecretStr | None = Field(
        None,
        description="At least 32 characters; signs the session cookie. Required by `serve`; `dev` makes one per run.",
    )
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis for sessions, sign-in state and rate limits (may hold a password: never logged).",
    )
    session_store: Literal["redis", "memory"] | None = Field(
        None, description="`redis` (default for `serve`) or `memory` (dev only; the default there)."
    )
    session_idle_timeout_s: float = Field(8 * 3600, gt=0, description="A session ends after this long unused.")
    session_max_age_s: float = Field(7 * 24 * 3600, gt=0, description="A session ends this long after sign-in.")
    login_failures_max: int = Field(
        10, ge=1, description="Failed sign-ins allowed per client IP and per username in the window below."
    )
    login_failures_window_s: float = Field(300.0, gt=0, description="The window for GATEWAY_LOGIN_FAILURES_MAX.")
    userid_header: str = Field("kubeflow-userid", description="Header carrying the user to notebooks.")
    groups_header: str = Field("kubeflow-groups", description="Header carrying the user's groups.")
    userid_prefix: str = Field("", description="Prefix put before the user in the userid header.")
    policy_file: Path | None = Field(
        None,
        description="Policy file (Casbin CSV: who holds which role where) that admins edit through the API or "
        "on disk; every replica reloads it within a second of a change. Unset: rules live in memory and are "
        "lost on restart. `dev` uses .dev/policy.csv.",
    )
    policy_reload_interval_s: float = Field(
        0.5, gt=0, le=1.0, description="How often the policy file is checked for changes made elsewhere."
    )
    policy_store: Literal["file", "configmap"] = Field(
        "file",
        description="Where the editable policies live: `file` (GATEWAY_POLICY_FILE, else memory) or `configmap` "
        "(a ConfigMap every replica watches; uses GATEWAY_KUBECONFIG / GATEWAY_KUBE_CONTEXT).",
    )
    policy_configmap: str = Field(
        "notebook-gateway-policies",
        description="Name of the policy ConfigMap (GATEWAY_POLICY_STORE=configmap); the CSV is in its "
        "`policy.csv` key.",
    )
    policy_namespace: str | None = Field(
        None,
        description="Namespace of the policy ConfigMap. Default: the gateway's own namespace (from its service "
        "account), else `kubeflow`.",
    )
    kubeflow_policies: bool = Field(
        False,
        description="Also take roles from Kubeflow, read-only: a Profile's owner is admin of its namespace, "
        "and KFAM RoleBindings (contributors) give admin, edit or view.",
    )
    bootstrap_admins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Users (comma-separated) who are cluster-admins whatever the policy file says, "
        "so a fresh install cannot lock everyone out.",
    )
    auto_profile: bool | None = Field(
        None,
        description="Give a user who signs in with no namespace `admin` of a new one named after them. "
        "Default: on with the development provider (dev), off otherwise.",
    )
    profiles: Literal["gateway", "kubeflow"] = Field(
        "gateway",
        description="Who sets up a profile's namespace (GATEWAY_BACKEND=kubernetes): `gateway` creates it with "
        "its service accounts, RoleBindings, quota and NetworkPolicy; `kubeflow` creates a Kubeflow Profile "
        "and leaves the rest to Kubeflow's profile controller.",
    )
    profile_reconcile_interval_s: float = Field(
        30.0,
        gt=0,
        description="How often (seconds) the gateway relists its profiles and puts back what was deleted or "
        "edited: service accounts, RoleBindings, quota, NetworkPolicy (GATEWAY_PROFILES=gateway), or each "
        "Kubeflow Profile namespace's NetworkPolicy and Istio AuthorizationPolicy admitting the gateway "
        "(GATEWAY_PROFILES=kubeflow); watches repair most changes at once.",
    )
    first_user_admin: bool = Field(
        False,
        description="Make the first user to sign in a cluster-admin when there is none. `dev` turns it on; "
        "`serve` refuses it.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="`json` lines, or `text` for people.")
    audit_dir: Path = Field(
        Path(".dev/audit"),
        description="Directory of the hash-chained audit files (one gateway process per directory; "
        "on a persistent volume in production). Also the spool for the Redis stream.",
    )
    audit_mode: Literal["fail_closed", "best_effort"] = Field(
        "fail_closed",
        description="When the audit file cannot be written: `fail_closed` refuses acts that must be audited "
        "(503), `best_effort` lets them through and writes their events once it can.",
    )
    audit_hmac_key: SecretStr | None = Field(
        None,
        description="Key for HMAC-SHA-256 event hashes, so that nobody without it can rewrite the files "
        "and forge a chain that verifies. Unset: plain SHA-256.",
    )
    audit_rotate_bytes: int = Field(
        64 * 1024 * 1024, ge=4096, description="Start a new audit file when the current one would grow past this."
    )
    audit_fsync_interval_s: float = Field(
        1.0, gt=0, le=1.0, description="How often written audit events are fsync'ed (and on shutdown)."
    )
    audit_redis_max_events: int = Field(
        1_000_000, ge=1000, description="Cap on the Redis audit stream (and each of its indexes), in events."
    )
    audit_redis_max_age_s: float | None = Field(
        None, gt=0, description="Also drop events older than this from the Redis stream. Unset: length cap only."
    )
    audit_access_events: Literal["first", "all"] = Field(
        "first",
        description="`notebook.access` for proxied HTTP: `first` request of each session to each server "
        "(WebSockets are always recorded), or `all` requests.",
    )
    audit_stdout: bool = Field(True, description="Also write each audit event as a JSON line to stdout.")
    # -- Redis: credentials and Sentinel (gateway/redis_connection.py; docs/operators.md, "Redis") --
    redis_username: str | None = Field(None, description="ACL user for Redis (instead of one in GATEWAY_REDIS_URL).")
    redis_password: SecretStr | None = Field(
        None, description="Password for Redis (instead of one in GATEWAY_REDIS_URL; never logged)."
    )
    redis_sentinels: Annotated[tuple[RedisAddress, ...], NoDecode] = Field(
        (),
        description="Redis Sentinels (host:port, comma-separated). Set: the gateway asks them for the master of "
        "GATEWAY_REDIS_SENTINEL_MASTER and follows failovers; GATEWAY_REDIS_URL then gives only the database, "
        "TLS (rediss://) and the servers' credentials.",
    )
    session_outage_grace_s: float = Field(
        0.0,
        ge=0,
        le=300,
        description="While Redis cannot be reached, keep honouring a session this replica checked in Redis at most "
        "this many seconds ago (0: off, every request needs Redis). Trades revocation delay for availability: "
        "see docs/operators.md.",
    )
    session_cache_s: float = Field(
        30.0,
        ge=0,
        le=300,
        description="Keep a session read from Redis in this replica's memory for up to this long, so a busy browser's "
        "requests need no Redis round trip (0: off). Every replica drops it the moment any replica changes or ends "
        "it (a Redis channel); while that channel is not proven live, every request reads Redis.",
    )
    redis_sentinel_master: str = Field("mymaster", min_length=1, description="The master name the sentinels monitor.")
    redis_sentinel_username: str | None = Field(None, description="ACL user for the sentinels themselves.")
    redis_sentinel_password: SecretStr | None = Field(
        None, description="Password for the sentinels themselves (never logged)."
    )

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(RedisAddress.parse(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("routes_file", mode="after")
    @classmethod
    def _routes_for_static(cls, value: FilePath | None, info: ValidationInfo) -> FilePath | None:
        if value is None and info.data.get("backend") == "static":
            raise ValueError(f"required when {ENV_PREFIX}BACKEND=static")
        return value

    # Bounds on what one client can make the gateway hold or wait for (issue 14).
    body_max_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body the gateway reads itself (forms, logout tokens; JSON APIs have "
        "smaller limits of their own): larger ones get 413. Uploads to notebooks stream and are not capped.",
    )
    client_idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A client connection is closed when its request headers have not all arrived this long "
        "after it opened or after its last response (slow clients, idle keep-alive).",
    )
    websocket_max_message_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        description="Largest WebSocket message relayed either way (Jupyter's own default, 10 MiB); a larger one "
        "closes the WebSocket with 1009 before it is read.",
    )
    websockets_per_user: int = Field(
        64, ge=1, description="WebSockets one user may hold open through the gateway at once; more get 429."
    )
    audit_anonymous_refusals: Literal["sampled", "all"] = Field(
        "sampled",
        description="`sampled`: an anonymous 401 is audited as the first per client per window plus a count "
        "(access.denied_summary), so a flood cannot fill the audit volume; `all`: one access.denied each.",
    )
    audit_refusal_window_s: float = Field(
        60.0,
        gt=0,
        description="The window of GATEWAY_AUDIT_ANONYMOUS_REFUSALS=sampled: one access.denied_summary each.",
    )
    audit_refusal_clients: int = Field(
        100, ge=1, description="Clients whose first anonymous 401 in a window is audited in full; beyond, counts only."
    )
    upstream_requests_per_user: int = Field(
        64,
        ge=1,
        description="Requests to notebooks one user may have in flight at once (WebSockets included); more get "
        "429, so that one user cannot take the upstream connection pool from everyone else.",
    )
    ext_authz_id_token: bool = Field(
        False,
        description="Put the session's ID token in /oauth2/auth answers as `Authorization: Bearer`, for an Istio "
        "RequestAuthentication behind ext_authz. Off: no token ever leaves the gateway in a response (a page could "
        "read it); turn on only where the proxy in front never returns /oauth2/auth answers to browsers.",
    )
    # Notebook origins (issue 13): each notebook server on its own origin, so its code never runs
    # with the gateway's session. See docs/security.md.
    notebook_origins: Literal["isolated", "single"] = Field(
        "isolated",
        description="`isolated`: every notebook server is served on its own origin, "
        "<name>--<namespace>.<GATEWAY_NOTEBOOK_DOMAIN> (needs wildcard DNS and a wildcard certificate), with its "
        "own credential. `single`: notebooks share the gateway's origin, so a notebook's code can act as whoever "
        "opens it; only for installs without wildcard DNS (see docs/security.md).",
    )
    notebook_domain: str | None = Field(
        None,
        description="Parent domain of the notebook origins (GATEWAY_NOTEBOOK_ORIGINS=isolated), e.g. "
        "`nb.example.com`; must not contain the gateway's own host. Required by `serve` in isolated mode; "
        "`dev` uses `localhost`. Scheme and port are the public URL's.",
    )

    @field_validator("notebook_domain", mode="after")
    @classmethod
    def _notebook_domain(cls, value: str | None) -> str | None:
        if value is not None and not is_dns_subdomain(value):
            raise ValueError(f"{value!r} is not a DNS name (lower-case labels separated by dots)")
        return value

    dashboard_origin: str | None = Field(
        None,
        description="Origin of Kubeflow's central dashboard (e.g. `https://kubeflow.example.com`): the gateway's "
        "pages may be framed by it, and only by it, and follow the namespace it selects. It must be on the same "
        "site as the gateway (the session cookie is SameSite=Lax) and not a notebook origin. Unset: never framed.",
    )

    @field_validator("dashboard_origin", mode="after")
    @classmethod
    def _dashboard_origin(cls, value: str | None) -> str | None:
        return None if value is None else parse_origin(value)

    @model_validator(mode="after")
    def _dashboard_is_not_a_notebook(self) -> Settings:
        # A notebook that could frame the gateway's pages could make its visitors click on them.
        host = urlsplit(self.dashboard_origin).hostname if self.dashboard_origin else None
        domain = self.notebook_domain
        if host and domain and (host == domain or host.endswith("." + domain)):
            raise ValueError(
                f"{ENV_PREFIX}DASHBOARD_ORIGIN {self.dashboard_origin} is under {ENV_PREFIX}NOTEBOOK_DOMAIN "
                f"{domain}: notebooks' code runs there, and must never frame the gateway's pages"
            )
        return self

    # -- tenant isolation on the cluster (docs/operators.md, "What each ServiceAccount may do") --
    profile_pod_security: Literal["baseline", "restricted"] = Field(
        "baseline",
        description="The Pod Security Admission level enforced in the namespaces the gateway makes "
        "(GATEWAY_PROFILES=gateway): `baseline` refuses privileged pods, host namespaces and hostPath volumes; "
        "`restricted` also requires non-root, no privilege escalation and dropped capabilities. `restricted` "
        "is always warned and audited.",
    )
    namespace_rule_limit: int = Field(
        200,
        ge=1,
        description="The most policy rules a namespace's admins may hold in it; a grant past it is refused "
        "(409) and counted in notebook_gateway_policy_rule_limit_refusals_total. Cluster-admins' grants (and profile "
        "owners') take no limit, and namespace admins' grants also stop short of the store's last 128 KiB.",
    )
    notebook_root_namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Namespaces (comma-separated) whose notebooks may run as root; everywhere else the "
        "gateway's Notebooks carry runAsNonRoot (and never privilege escalation or added capabilities).",
    )
    cull_idle_after: float | None = Field(
        None,
        gt=0,
        description="Stop (as STOP does) a notebook server that nobody used through the gateway for this long: "
        "seconds, or a duration such as `90m`, `12h`, `2d`. Unset: never, as Kubeflow's culler is off by default. "
        "Counts requests and WebSocket messages, not kernels' state: see docs/operators.md.",
    )
    cull_exempt_namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Namespaces (comma-separated) whose notebook servers are never culled. A single server is "
        'exempted by the annotation `notebook-gateway.kubeflow.org/cull-exempt: "true"` on its Notebook.',
    )
    cull_check_interval_s: float = Field(
        60.0, gt=0, description="How often one replica (a Redis lease) looks for idle servers to stop."
    )
    cull_warning_s: float = Field(
        3600.0, ge=0, description="The Notebook Servers page warns this long before an idle server is stopped."
    )

    @field_validator("cull_idle_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_duration(value)
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, list | tuple):
            return value
        networks = []
        for part in parts:
            text = str(part).strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
        return tuple(networks)

    @field_validator(
        "bootstrap_admins", "namespaces", "notebook_root_namespaces", "cull_exempt_namespaces", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name for part in value.split(",") if (name := part.strip()))
        return value

    @field_validator(
        "namespaces", "policy_namespace", "notebook_root_namespaces", "cull_exempt_namespaces", mode="after"
    )
    @classmethod
    def _dns_labels(cls, value: tuple[str, ...] | str | None) -> tuple[str, ...] | str | None:
        for name in (value,) if isinstance(value, str) else value or ():
            if not is_dns_label(name):
                raise ValueError(f"{name!r} is not a namespace name (a DNS-1123 label)")
        return value

    @field_validator("cluster_domain", "policy_configmap", mode="after")
    @classmethod
    def _dns_subdomain(cls, value: str) -> str:
        if not is_dns_subdomain(value):
            raise ValueError(f"{value!r} is not a DNS-1123 subdomain (lower-case labels joined by dots)")
        return value

    @field_validator("oidc_scopes", "bearer_audiences", "oidc_allowed_groups", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(word for word in value.replace(",", " ").split() if word)
        return value

    @field_validator("oidc_allowed_email_domains", mode="before")
    @classmethod
    def _domains(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(d.strip().lstrip("@").lower() for d in value.replace(",", " ").split() if d.strip())
        return value

    @field_validator("bearer_issuers", mode="after")
    @classmethod
    def _distinct_issuers(cls, value: tuple[BearerIssuer, ...], info: ValidationInfo) -> tuple[BearerIssuer, ...]:
        main = info.data.get("oidc_issuer")
        seen = {str(main).rstrip("/")} if main is not None else set()
        for extra in value:
            issuer = str(extra.issuer).rstrip("/")
            if issuer in seen:
                raise ValueError(f"{issuer} is listed twice, or is GATEWAY_OIDC_ISSUER itself")
            seen.add(issuer)
        return value

    @field_validator("cookie_secret", mode="after")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _metrics_port_is_its_own(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("GATEWAY_METRICS_PORT must differ from GATEWAY_PORT (it is a second listener)")
        return self

    @model_validator(mode="after")
    def _dev_provider_on_loopback(self) -> Settings:
        problem = self.dev_provider_exposure()
        if problem:
            raise ValueError(problem)
        return self

    def dev_provider_exposure(self) -> str | None:
        """Why the development provider may not run with these settings, if it is on and may not.

        It signs in anyone, so it may only be reachable from this machine: both the listening address
        and the public URL must be loopback, whatever else is set. Also checked by `create_app`, since
        `dev` turns the provider on in a copy of the settings that validators do not see."""
        if not self.dev_provider:
            return None
        where = [self.host] + ([self.public_url.host or ""] if self.public_url is not None else [])
        if all(is_loopback(host) for host in where):
            return None
        return (
            f"{ENV_PREFIX}DEV_PROVIDER signs in anyone, so it runs on loopback only: {ENV_PREFIX}HOST and "
            f"{ENV_PREFIX}PUBLIC_URL must be 127.0.0.1, ::1 or localhost (got {', '.join(where)})"
        )

    def problems_for_serve(self) -> list[str]:
        """What `serve` needs beyond a valid file: a real provider, a cookie secret, Redis sessions."""
        problems = []
        if self.dev_provider:
            problems.append(f"{ENV_PREFIX}DEV_PROVIDER: the development provider signs in anyone; never in `serve`")
        if self.oidc_issuer is None:
            problems.append(f"{ENV_PREFIX}OIDC_ISSUER: required by `serve` (the development provider is dev-only)")
        if self.oidc_client_secret is None:
            problems.append(f"{ENV_PREFIX}OIDC_CLIENT_SECRET: required by `serve`")
        if self.cookie_secret is None:
            problems.append(f"{ENV_PREFIX}COOKIE_SECRET: required by `serve` (at least 32 characters)")
        if self.session_store == "memory":
            problems.append(f"{ENV_PREFIX}SESSION_STORE: `memory` is for dev only; `serve` keeps sessions in Redis")
        if self.first_user_admin:
            problems.append(f"{ENV_PREFIX}FIRST_USER_ADMIN: whoever signs in first would run the cluster; dev only")
        if self.notebook_origins == "isolated" and self.notebook_domain is None:
            problems.append(
                f"{ENV_PREFIX}NOTEBOOK_DOMAIN: required for isolated notebook origins (or set "
                f"{ENV_PREFIX}NOTEBOOK_ORIGINS=single, which lets a notebook act as whoever opens it)"
            )
        return problems

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file; the file is only read when `load()` names one. Secrets may also come from
        # files named in the environment (SecretFiles).
        return (init_settings, env_settings, SecretFiles(settings_cls), TomlConfigSettingsSource(settings_cls))

    @property
    def base_url(self) -> str:
        """The public origin without a trailing slash, e.g. `http://127.0.0.1:8080`."""
        if self.public_url is not None:
            return str(self.public_url).rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `30m`, `12h` or `2d` as seconds; anything else is refused, not guessed."""
    value = text.strip().lower()
    unit = _DURATION_UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"{text[:50]!r} is not a duration: write seconds, or a number with s, m, h or d") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{text[:50]!r} is not a positive duration")
    return seconds


def is_loopback(host: str) -> bool:
    """True for an address or name that only this machine reaches: 127.0.0.0/8, ::1, localhost, *.localhost."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ConfigError(Exception):
    """Settings that cannot be used; `problems` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load(config_file: Path | None = None, **overrides: object) -> Settings:
    """Read the settings, reporting every invalid one at once as a `ConfigError`."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError([f"--config {config_file}: no such file"])
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        settings_cls = type(
            "FileSettings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_file}}
        )
    try:
        return settings_cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError([_describe_error(err) for err in exc.errors()]) from None


def _describe_error(err: object) -> str:
    """One line naming the environment variable, never echoing the value (it may be a secret)."""
    assert isinstance(err, dict)
    field = str(err["loc"][0]) if err.get("loc") else "?"
    return f"{ENV_PREFIX}{field.upper()}: {err['msg']}"


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting: the README's configuration reference."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = _display_default(field.default)
        rows.append((f"{ENV_PREFIX}{name.upper()}", default, field.description or ""))
    return rows


def _display_default(value: object) -> str:
    if value in (None, ()):
        return ""
    if isinstance(value, SecretStr):
        return value.get_secret_value()  # only a default, never a configured value, is shown
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)
