"""Server-rendered pages: the sign-in landing page, Notebook Servers, NEW SERVER, Access, Configurations,
Profiles, Policies, Audit.

Handlers decide what a person may see and render it; the pages' small scripts (`static/`) call the
JSON API for everything that changes state, so the API stays the only place that acts.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from aiohttp import web

from .. import keys
from ..authz.authorizer import personal_namespace
from ..authz.rules import Action
from ..backends.poddefaults import configuration_item
from ..errors import BadRequest, Forbidden, NotFound
from ..names import is_dns_label
from ..profiles import describe
from ..spawner import SpawnerConfig
from .api import notebook_items
from .spawner_form import spawner_form

STATIC_DIR = Path(__file__).parent / "static"
EVERY_NAMESPACE = "*"  # a rule for every namespace: cluster-wide roles
# Served without a session: the landing page explains the gateway to someone not signed in.
PUBLIC = frozenset({"welcome"})
# The namespace chosen last. Our cookie prefix, so the proxy never forwards it to notebooks.
NAMESPACE_COOKIE = "notebook_gateway_namespace"
NAMESPACE_COOKIE_MAX_AGE_S = 365 * 24 * 3600
# Our pages run only our own scripts and styles and are never framed. No `form-action`: Chrome
# applies it to the redirect after SIGN OUT, which may go to the identity provider's origin.
PAGE_CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors {}"
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP.format("'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages name the user and their servers
}


@functools.cache
def page_headers(dashboard_origin: str | None) -> dict[str, str]:
    """PAGE_HEADERS, or with GATEWAY_DASHBOARD_ORIGIN, those that let exactly that origin frame the
    page (Kubeflow's central dashboard shows its apps in an iframe). X-Frame-Options can only say
    DENY or SAMEORIGIN, so it goes, and CSP's frame-ancestors (which browsers prefer) names the origin."""
    if dashboard_origin is None:
        return PAGE_HEADERS
    headers = {key: value for key, value in PAGE_HEADERS.items() if key != "X-Frame-Options"}
    headers["Content-Security-Policy"] = PAGE_CSP.format(dashboard_origin)
    return headers


# The JSON APIs the admin pages drive; a page (and its link) exists only once its API does.
POLICIES_API = "/api/policies"
ACCESS_API = "/api/namespaces/{}/access"
AUDIT_API = "/api/audit"
NAMESPACE_ROLES = ("view", "edit", "admin")
CLUSTER_ROLES = ("cluster-admin", "auditor")
CHECK_ACTIONS = ("view", "connect", "create", "stop", "start", "delete", "manage", "audit")
AUDIT_FILTERS = ("user", "namespace", "notebook", "action", "outcome", "since", "until", "text")
AUDIT_OUTCOMES = ("allowed", "denied", "failed")
# The Profiles form's quota inputs: (the API's quota key, label, placeholder); the GPU vendors of the
# spawner config come between memory and the PVC count (`profile_quota_fields`).
PROFILE_QUOTA_FIELDS = (
    ("cpu", "CPU", "8"),
    ("memory", "Memory", "32Gi"),
    ("persistentvolumeclaims", "PVC count", "10"),
    ("requests.storage", "Storage", "500Gi"),
)


def profile_quota_fields(spawner: SpawnerConfig) -> tuple[tuple[str, str, str], ...]:
    """The quota inputs, with one per GPU vendor the form offers (e.g. "GPUs (AMD)" for amd.com/gpu)."""
    gpus = tuple((vendor.limits_key, f"GPUs ({vendor.ui_name})", "2") for vendor in spawner.gpu_vendors)
    return PROFILE_QUOTA_FIELDS[:2] + gpus + PROFILE_QUOTA_FIELDS[2:]


routes = web.RouteTableDef()


@routes.get("/", name="index")
async def index(request: web.Request) -> web.StreamResponse:
    query = f"?{request.query_string}" if request.query_string else ""
    raise web.HTTPFound(f"/notebooks{query}")


@routes.get("/welcome", name="welcome")
async def welcome(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    return render(request, "welcome.html", dev_provider=settings.dev_provider)


@routes.get("/notebooks", name="notebooks")
async def notebooks(request: web.Request) -> web.Response:
    identity = request[keys.IDENTITY]
    namespaces = usable_namespaces(request)
    namespace = choose_namespace(request, namespaces)
    items: list[dict[str, object]] = []
    allowed: list[str] = []
    if namespace is not None:
        request.app[keys.AUTHZ].require(identity, namespace, "view")
        items = await notebook_items(request, await request.app[keys.BACKEND].list(namespace))
        allowed = [
            action for action in ("create", "connect", "stop", "start", "delete") if may(request, namespace, action)
        ]
        if has_api(request.app, AUDIT_API) and may(request, EVERY_NAMESPACE, "audit"):
            allowed.append("history")  # a link per server to its audit history
        namespaces.setdefault(namespace, "cluster-wide")  # a cluster-wide role opened it by name
    manager = request.app.get(keys.POLICIES)
    response = render(
        request,
        "notebooks.html",
        current="notebooks",
        namespace=namespace,
        namespaces=namespaces,
        notebooks=items,
        allowed=allowed,
        first_admin=manager is not None and manager.made_first_user_admin(identity),
        cull_warning_s=int(culling.warning_s) if (culling := request.app.get(keys.CULLING)) else 0,
    )
    remember(request, response, namespace)
    return response


@routes.get("/notebooks/new", name="new_notebook")
async def new_notebook(request: web.Request) -> web.Response:
    identity = request[keys.IDENTITY]
    namespace = choose_namespace(request, usable_namespaces(request))
    if namespace is None:
        raise Forbidden("You have no namespace to create a notebook server in; ask an administrator for access.")
    request.app[keys.AUTHZ].require(identity, namespace, "create")
    backend = request.app[keys.BACKEND]
    found = await backend.poddefaults(namespace)  # none where the backend has none
    spawner = request.app[keys.SPAWNER]
    return render(
        request,
        "new_notebook.html",
        current="notebooks",
        namespace=namespace,
        spawner=spawner,
        configurations=[configuration_item(obj) for obj in found],
        **spawner_form(spawner, pods=backend.runs_pods),
    )


@routes.get("/access", name="access")
async def access(request: web.Request) -> web.Response:
    require_api(request, ACCESS_API, "Managing access")
    managed = managed_namespaces(request)
    everywhere = may(request, EVERY_NAMESPACE, "manage")
    namespace = request.query.get("ns") or (managed[0] if managed else None)
    if namespace is None and not everywhere:
        raise Forbidden("You are not an administrator of any namespace.")
    if namespace is not None:
        if not is_dns_label(namespace):
            raise BadRequest(f"{namespace[:63]!r} is not a namespace name (a DNS-1123 label).", field="ns")
        if not (everywhere or may(request, namespace, "manage")):
            raise Forbidden(f"You may not manage access to the namespace {namespace!r}.")
    return render(
        request,
        "access.html",
        current="access",
        namespace=namespace,
        managed=managed,
        everywhere=everywhere,
        roles=NAMESPACE_ROLES,
    )


@routes.get("/configurations", name="configurations")
async def configurations(request: web.Request) -> web.Response:
    """Namespace admins list, create and delete PodDefaults; Secrets appear by name only."""
    managed = managed_namespaces(request)
    namespace = request.query.get("ns") or (managed[0] if managed else None)
    if namespace is None:
        raise Forbidden("You are not an administrator of any namespace.")
    if not is_dns_label(namespace):
        raise BadRequest(f"{namespace[:63]!r} is not a namespace name (a DNS-1123 label).", field="ns")
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], namespace, "manage")
    backend = request.app[keys.BACKEND]
    found = await backend.poddefaults(namespace)
    return render(
        request,
        "configurations.html",
        current="configurations",
        namespace=namespace,
        managed=managed,
        kubernetes=backend.has_configurations,
        configurations=[configuration_item(obj) for obj in found],
    )


@routes.get("/profiles", name="profiles")
async def profiles(request: web.Request) -> web.Response:
    """Cluster-admins list, create and delete profiles (the Kubernetes backend only)."""
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], EVERY_NAMESPACE, "manage")
    provisioner = request.app.get(keys.PROFILES)
    found = await provisioner.list_profiles() if provisioner is not None else []
    return render(
        request,
        "profiles.html",
        current="profiles",
        kubernetes=provisioner is not None,
        mode=provisioner.mode if provisioner is not None else "",
        profiles=[describe(profile) for profile in found],
        quota_fields=profile_quota_fields(request.app[keys.SPAWNER]),
    )


@routes.get("/policies", name="policies")
async def policies(request: web.Request) -> web.Response:
    require_api(request, POLICIES_API, "The policy editor")
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], EVERY_NAMESPACE, "manage")
    return render(
        request,
        "policies.html",
        current="policies",
        roles=NAMESPACE_ROLES + CLUSTER_ROLES,
        actions=CHECK_ACTIONS,
    )


@routes.get("/audit", name="audit")
async def audit(request: web.Request) -> web.Response:
    require_api(request, AUDIT_API, "The audit log")
    request.app[keys.AUTHZ].require(request[keys.IDENTITY], EVERY_NAMESPACE, "audit")
    filters = {name: request.query.get(name, "") for name in AUDIT_FILTERS}
    return render(request, "audit.html", current="audit", filters=filters, outcomes=AUDIT_OUTCOMES)


# -- what the signed-in person may see ---------------------------------------------------------


def usable_namespaces(request: web.Request) -> dict[str, str]:
    """The namespaces the user has a role in, with that role; `*` (a cluster-wide role) is no
    namespace to list servers in."""
    namespaces = request.app[keys.AUTHZ].namespaces(request[keys.IDENTITY])
    return {ns: role for ns, role in namespaces.items() if ns != EVERY_NAMESPACE}


def managed_namespaces(request: web.Request) -> list[str]:
    return [ns for ns in sorted(usable_namespaces(request)) if may(request, ns, "manage")]


def choose_namespace(request: web.Request, namespaces: dict[str, str]) -> str | None:
    """The namespace asked for (`?ns=`), else the one chosen last (cookie), else the user's own, else
    the first. Asking for a namespace the user may not view is refused, not silently replaced; a
    cluster-wide role may open any namespace by name."""
    asked = request.query.get("ns")
    if asked is not None:
        if asked not in namespaces and not (is_dns_label(asked) and may(request, asked, "view")):
            raise Forbidden(f"You have no access to the namespace {asked[:63]!r}.")
        return asked
    remembered = request.cookies.get(NAMESPACE_COOKIE)
    if remembered in namespaces:
        return remembered
    own = personal_namespace(request[keys.IDENTITY].subject)
    if own in namespaces:
        return own
    return min(namespaces) if namespaces else None


def remember(request: web.Request, response: web.StreamResponse, namespace: str | None) -> None:
    if namespace is not None and request.cookies.get(NAMESPACE_COOKIE) != namespace:
        secure = request.app[keys.SETTINGS].base_url.startswith("https://")
        response.set_cookie(
            NAMESPACE_COOKIE,
            namespace,
            path="/",
            max_age=NAMESPACE_COOKIE_MAX_AGE_S,
            httponly=True,
            samesite="Lax",
            secure=secure,
        )


def may(request: web.Request, namespace: str, action: Action) -> bool:
    """The authorizer's decision, as a yes or no for showing a link or a button. Hiding is a courtesy:
    the API decides again on every request."""
    authz, identity = request.app[keys.AUTHZ], request[keys.IDENTITY]
    # Deciding what to show is no refused request: ask without the refusal being logged, where the
    # authorizer can (`Authorizer.require` logs each one).
    allows = getattr(authz, "allows", None)
    if callable(allows):
        return bool(allows(identity, namespace, action))
    try:
        authz.require(identity, namespace, action)
    except Forbidden:
        return False
    return True


def has_api(app: web.Application, path: str) -> bool:
    """Whether a route with `path`'s shape is registered (`{}` stands for any one path parameter)."""
    wanted = path.replace("{}", "{_}")
    return any(_shape(resource.canonical) == wanted for resource in app.router.resources())


def _shape(canonical: str) -> str:
    return re.sub(r"\{[^}]*\}", "{_}", canonical)


def require_api(request: web.Request, path: str, what: str) -> None:
    if not has_api(request.app, path):
        raise NotFound(f"{what} is not available in this version of the gateway.")


def navigation(request: web.Request) -> list[dict[str, str]]:
    """The layout's links: each admin page only for those who may use it, once its API exists."""
    links = [{"name": "notebooks", "label": "Notebook Servers", "href": "/notebooks"}]
    app = request.app
    cluster_admin = may(request, EVERY_NAMESPACE, "manage")
    if has_api(app, ACCESS_API) and (cluster_admin or managed_namespaces(request)):
        links.append({"name": "access", "label": "Access", "href": "/access"})
    if app[keys.BACKEND].has_configurations and managed_namespaces(request):
        links.append({"name": "configurations", "label": "Configurations", "href": "/configurations"})
    if keys.PROFILES in app and cluster_admin:
        links.append({"name": "profiles", "label": "Profiles", "href": "/profiles"})
    if has_api(app, POLICIES_API) and cluster_admin:
        links.append({"name": "policies", "label": "Policies", "href": "/policies"})
    if has_api(app, AUDIT_API) and may(request, EVERY_NAMESPACE, "audit"):
        links.append({"name": "audit", "label": "Audit", "href": "/audit"})
    return links


def render(request: web.Request, template: str, *, current: str = "", **context: object) -> web.Response:
    identity = request.get(keys.IDENTITY)
    links = navigation(request) if identity is not None else []
    dashboard_origin = request.app[keys.SETTINGS].dashboard_origin
    body = (
        request.app[keys.TEMPLATES]
        .get_template(template)
        .render(
            user=identity.subject if identity is not None else None,
            links=links,
            current=current,
            # Whoever administers something is told, on every page, that notebooks share this origin.
            single_origin=not request.app[keys.ORIGINS].isolated and len(links) > 1,
            dashboard_origin=dashboard_origin,  # static/dashboard.js follows its namespace messages
            **context,
        )
    )
    return web.Response(text=body, content_type="text/html", headers=page_headers(dashboard_origin))
