"""`/oauth2/auth`: the gateway as the sign-in check for other apps behind the same proxy, as
oauth2-proxy offers it, so a Kubeflow install can drop oauth2-proxy for its dashboard, pipelines
and other web apps too.

Two shapes, as oauth2-proxy's:
- `GET /oauth2/auth` for nginx `auth_request` and Traefik `forwardAuth`: 202 with the user in the
  response headers, 401 when nobody is signed in (nginx takes any other status as an error), 403
  when `?allowed_groups=a,b` excludes the user.
- `* /oauth2/auth/<path>` for Envoy's (Istio's) HTTP ext_authz with `pathPrefix: /oauth2/auth`: the
  check carries the original method, path and headers. Allowed: 200 with the headers Istio copies
  upstream (`headersToUpstreamOnAllow`). Refused: a browser navigation is sent to sign in and back to
  `<path>`; anything else gets a 401 JSON body, as Jupyter's own background requests do here.

Only authentication is decided here: what the user may do in those apps is theirs to decide (the
dashboard and pipelines read `kubeflow-userid` and ask Kubernetes), as with oauth2-proxy.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from .. import keys
from ..errors import Forbidden, LoginRequired
from ..identity import Identity
from ..sessions import Session
from . import notebook_login
from .oauth import safe_return_path
from .responses import is_navigation, render_error

routes = web.RouteTableDef()

# The checks authenticate for themselves: a refusal must say "sign in" for the original request, not for the check.
PUBLIC = frozenset({"oauth2_auth", "oauth2_auth_prefix"})


@routes.get("/oauth2/auth", name="oauth2_auth")
async def auth_request(request: web.Request) -> web.StreamResponse:
    """nginx `auth_request` / Traefik `forwardAuth`: 202, 401 or 403, never a redirect."""
    original = request.headers.get("X-Original-URI") or request.headers.get("X-Forwarded-Uri") or "/"
    identity, session = await notebook_login.identify_check(request, original)
    if identity is None:
        return render_error(request, LoginRequired())
    refusal = _outside(identity, request.query.get("allowed_groups", ""))
    if refusal is not None:
        return render_error(request, refusal)
    return web.Response(status=202, headers=_identity_headers(request, identity, session))


@routes.route("*", "/oauth2/auth/{path:.*}", name="oauth2_auth_prefix")
async def ext_authz(request: web.Request) -> web.StreamResponse:
    """Envoy ext_authz: the original request's path follows the prefix."""
    original = request.raw_path.removeprefix("/oauth2/auth")
    identity, session = await notebook_login.identify_check(request, original)
    if identity is None:
        if request.method in ("GET", "HEAD") and is_navigation(request.headers, original):
            handshake = notebook_login.start_for_check(request, original)  # on a notebook's own host
            if handshake is not None:
                raise handshake
            # Envoy passes this redirect to the browser when `location` is in headersToDownstreamOnDeny.
            raise web.HTTPFound(f"/oauth2/start?{urlencode({'rd': safe_return_path(original)})}")
        return render_error(request, LoginRequired())
    refusal = _outside(identity, request.query.get("allowed_groups", ""))
    if refusal is not None:
        return render_error(request, refusal)
    return web.Response(status=200, headers=_identity_headers(request, identity, session))


def _outside(identity: Identity, allowed_groups: str) -> Forbidden | None:
    groups = {group.strip() for group in allowed_groups.split(",") if group.strip()}
    if groups and not groups.intersection(identity.groups):
        return Forbidden("None of your groups may use this app.")
    return None


def _identity_headers(request: web.Request, identity: Identity, session: Session | None) -> dict[str, str]:
    """oauth2-proxy's X-Auth-Request-* headers, Kubeflow's own, and (opt-in) the ID token for Istio.

    With the ID token as `Authorization`, Istio's RequestAuthentication can check it and derive
    `kubeflow-userid` from its claims, as Kubeflow's manifests do with oauth2-proxy. Off by default, as
    oauth2-proxy's `--set-authorization-header` is: a page on this host can fetch /oauth2/auth itself
    and read the answer's headers, and a token read there is an API key until it expires."""
    settings = request.app[keys.SETTINGS]
    groups = ",".join(identity.groups)
    headers = {
        "X-Auth-Request-User": identity.subject,
        "X-Auth-Request-Preferred-Username": identity.subject,
        "X-Auth-Request-Groups": groups,
        settings.userid_header: settings.userid_prefix + identity.subject,
        settings.groups_header: groups,
        "Cache-Control": "no-store",
    }
    if identity.email:
        headers["X-Auth-Request-Email"] = identity.email
    if settings.ext_authz_id_token and session is not None and session.id_token:
        headers["Authorization"] = f"Bearer {session.id_token}"
    return headers
