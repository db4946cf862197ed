"""Which headers cross the proxy, both ways: hop-by-hop and spoofable ones out, ours in.

Every set is built once (per distinct settings) so that a request costs one pass over its headers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from .config import IPNetwork, Settings
from .cookies import COOKIE_PREFIX, is_gateway_cookie
from .forwarded import is_trusted
from .identity import Identity

# Cookies whose names start with COOKIE_PREFIX belong to the gateway (session, login state) and
# never reach a notebook server, whose code the user controls.

# Meaningful for one connection only (RFC 9110 §7.6.1), plus what old clients send. Any `Proxy-*`
# header and any header that `Connection` names is dropped as well.
HOP_BY_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade"}
)

# Headers through which a front proxy tells a notebook who the user is. Only the gateway may set
# them; any client-sent variant is removed (compared lower-case, with `_` read as `-`, because
# some servers fold `X_Remote_User` into `X-Remote-User`).
IDENTITY_HEADERS = frozenset(
    {
        "kubeflow-userid",
        "kubeflow-groups",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-forwarded-preferred-username",
        "x-forwarded-access-token",
        "x-auth-request-user",
        "x-auth-request-email",
        "x-auth-request-groups",
        "x-auth-request-preferred-username",
        "x-auth-request-access-token",
        "x-remote-user",
        "x-remote-group",
        "remote-user",
    }
)

# Headers that some server, framework or front proxy treats as who the user is (Grafana's auth
# proxy, Azure App Service, Google IAP, AWS ALB, Cloudflare Access, Pomerium, Apache/Tomcat setups)
# or as where the request goes and where it came from (IIS/Symfony/Zend URL rewrites, CDN client IPs,
# method overrides). Nothing upstream of the gateway has a right to say either, so a client's copy
# is removed; the notebook learns the user from the userid and groups headers only.
# docs/security.md lists them; tests/test_proxy.py sends every one it names.
SPOOFABLE_HEADERS = frozenset(
    {
        # identity
        "x-user",
        "x-username",
        "x-user-id",
        "x-userid",
        "x-email",
        "x-groups",
        "x-preferred-username",
        "x-auth-user",
        "x-authenticated-user",
        "x-authenticated-userid",
        "x-authenticated-groups",
        "x-webauth-user",
        "x-webauth-email",
        "x-webauth-name",
        "x-webauth-groups",
        "x-remote-email",
        "x-remote-name",
        "x-proxy-user",
        "x-ms-client-principal",
        "x-ms-client-principal-id",
        "x-ms-client-principal-name",
        "x-ms-client-principal-idp",
        "x-goog-authenticated-user-email",
        "x-goog-authenticated-user-id",
        "x-goog-iap-jwt-assertion",
        "x-amzn-oidc-identity",
        "x-amzn-oidc-data",
        "x-amzn-oidc-accesstoken",
        "cf-access-authenticated-user-email",
        "cf-access-jwt-assertion",
        "x-pomerium-jwt-assertion",
        "x-jwt-assertion",
        "x-id-token",
        "x-access-token",
        # routing: which URL, method or host the upstream should really serve
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-original-host",
        "x-original-method",
        "x-forwarded-uri",
        "x-forwarded-path",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-url-scheme",
        "x-scheme",
        "front-end-https",
        "x-host",
        "x-http-host-override",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        # where the client is: believed by rate limits and allow-lists
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "client-ip",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-envoy-external-address",
    }
)

# Set by us from the connection; a client's own values are only believed from a trusted proxy.
FORWARDING_HEADERS = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip"}
)

# The WebSocket handshake is redone on the upstream leg by aiohttp, with its own key and
# extensions; the client's offered subprotocols are passed separately.
WEBSOCKET_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)

# `Expect: 100-continue` is answered by the gateway itself, once the request is authorised.
_REQUEST_ONLY = frozenset({"expect"})


def fold(name: str) -> str:
    """A header name as the filters compare it: lower case, `_` read as `-`."""
    return name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """The request-header filter for one configuration."""

    drop: frozenset[str]  # folded names never forwarded upstream on plain HTTP
    drop_websocket: frozenset[str]  # the same, for a WebSocket handshake
    userid_header: str
    groups_header: str
    userid_prefix: str
    trusted_proxies: tuple[IPNetwork, ...]


@functools.lru_cache(maxsize=16)
def _policy(
    userid_header: str, groups_header: str, userid_prefix: str, trusted_proxies: tuple[IPNetwork, ...]
) -> HeaderPolicy:
    drop = (
        HOP_BY_HOP_HEADERS
        | IDENTITY_HEADERS
        | SPOOFABLE_HEADERS
        | FORWARDING_HEADERS
        | _REQUEST_ONLY
        | {fold(userid_header), fold(groups_header)}
    )
    return HeaderPolicy(
        drop=drop,
        drop_websocket=drop | WEBSOCKET_HANDSHAKE_HEADERS,
        userid_header=userid_header,
        groups_header=groups_header,
        userid_prefix=userid_prefix,
        trusted_proxies=trusted_proxies,
    )


def policy_for(settings: Settings) -> HeaderPolicy:
    """The (cached) header policy for `settings`."""
    return _policy(settings.userid_header, settings.groups_header, settings.userid_prefix, settings.trusted_proxies)


def connection_tokens(value: str) -> frozenset[str]:
    """The header names a `Connection` header lists (they are hop-by-hop too)."""
    return frozenset(fold(token.strip()) for token in value.split(",") if token.strip())


def strip_gateway_cookies(cookie_header: str) -> str:
    """The Cookie header without the gateway's own cookies; other pairs are kept byte for byte."""
    if COOKIE_PREFIX not in cookie_header:
        return cookie_header
    kept = [pair.strip() for pair in cookie_header.split(";")]
    return "; ".join(pair for pair in kept if pair and not is_gateway_cookie(pair))


def upstream_headers(
    request: web.Request, policy: HeaderPolicy, identity: Identity, *, websocket: bool = False
) -> CIMultiDict[str]:
    """The headers to send to the notebook server for `request`.

    The client's Host is kept: Jupyter compares Origin with Host for its origin check, as it does
    behind Istio in Kubeflow; the gateway routes by its own parse of the path, never by Host.
    `Authorization` is kept unless it carried the bearer token the gateway signed the request in
    with: any other scheme (Basic, Jupyter's `token`) is addressed to the notebook, which the user
    controls, and the gateway never reads it as identity.
    """
    headers = request.headers
    drop = policy.drop_websocket if websocket else policy.drop
    connection = headers.get("Connection")
    named = connection_tokens(connection) if connection else frozenset()
    drop_authorization = identity.method == "bearer"
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        key = name.lower()
        if "_" in key:
            key = key.replace("_", "-")
        if key in drop or key in named or key.startswith("proxy-"):
            continue
        if key == "cookie":
            value = strip_gateway_cookies(value)
            if not value:
                continue
        elif key == "authorization" and drop_authorization:
            continue  # the bearer token was for the gateway, not for the notebook
        out.add(name, value)

    remote = request.remote or ""
    if policy.trusted_proxies and is_trusted(remote, policy.trusted_proxies):
        prior = headers.get("X-Forwarded-For")
        out["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
        out["X-Forwarded-Proto"] = headers.get("X-Forwarded-Proto") or request.scheme
        out["X-Forwarded-Host"] = headers.get("X-Forwarded-Host") or headers.get("Host") or ""
    else:
        out["X-Forwarded-For"] = remote
        out["X-Forwarded-Proto"] = request.scheme
        out["X-Forwarded-Host"] = headers.get("Host", "")

    out[policy.userid_header] = policy.userid_prefix + identity.subject
    out[policy.groups_header] = ",".join(identity.groups)
    return out


def set_upstream_token(headers: CIMultiDict[str], token: str | None) -> None:
    """With a backend whose servers take only the gateway (the local one), its token replaces any
    Authorization the client sent: that server has no other users to address."""
    if token is not None:
        headers["Authorization"] = f"token {token}"


def downstream_headers(upstream: MultiMapping[str], prefix: str | None = None) -> CIMultiDict[str]:
    """The notebook server's response headers as the client gets them.

    Hop-by-hop headers go, and so does anything that would reach beyond the notebook: a
    `Set-Cookie` for a gateway cookie (notebook code must not plant or overwrite the gateway's
    session) or with a `Domain` (a parent domain's cookie reaches every notebook and the gateway),
    and a `Service-Worker-Allowed` wider than the notebook's `prefix` (all of them without one).
    """
    out: CIMultiDict[str] = CIMultiDict()
    named: frozenset[str] = frozenset()
    for name, value in upstream.items():
        key = name.lower()
        if key in HOP_BY_HOP_HEADERS or key.startswith("proxy-"):
            if key == "connection":
                named = connection_tokens(value)
            continue
        if key == "set-cookie" and not _cookie_stays_home(value):
            continue
        if key == "service-worker-allowed" and (prefix is None or not _within(value.strip(), prefix)):
            continue
        out.add(name, value)
    if named:
        for key in named:
            out.popall(key, None)
    return out


def _cookie_stays_home(set_cookie: str) -> bool:
    """False for a cookie of ours, or one set for a domain rather than the notebook's own host."""
    cookie_name, _, attributes = set_cookie.lstrip().partition(";")
    if is_gateway_cookie(cookie_name.strip()):
        return False
    return not any(attr.strip().lower().startswith("domain") for attr in attributes.split(";"))


def _within(scope: str, prefix: str) -> bool:
    """True when a service worker scope path stays inside the notebook's prefix (no dot segments, no escapes)."""
    return scope.startswith(prefix) and "%" not in scope and "/." not in scope and "\\" not in scope
