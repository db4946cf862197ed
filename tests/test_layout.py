"""The package layout is the architecture: imports flow down the rows of STYLE.md section 1, read
from the source with `ast` (nothing is imported), so the table in README.md's code map stays true."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"

# Top to bottom: a module imports only from rows above its own and from its own package (or group).
# The components are ordered in four steps, so that they can build on each other without cycles: `kube`
# is the one client that authz, backends and profiles share (STYLE.md: "handed to every user"), `routing`
# the one path parse, `sessions` what the authenticator reads; onboarding uses the policies and profiles.
# Leaves import nothing of the gateway but `names` (which the settings use to check names).
ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "leaves (plain values)",
        ("names", "cookies", "quantities", "backoff", "origins", "version", "wsframes"),
    ),  # config checks names
    ("leaves", ("config", "errors", "identity", "logs", "spawner", "pod_security", "upstream_http")),
    (
        "components (foundations)",
        ("routing", "forwarded", "sessions", "notebook_credentials", "ratelimit", "userslots", "redis_connection")
        + ("kube", "audit", "activity", "body_models"),
    ),
    ("components", ("authz", "auth", "backends", "metrics")),
    ("components (features)", ("profiles", "notebook_form", "culling")),
    # Built on profiles: grants and profiles for a new user (uses both); the gateway's access to Kubeflow's.
    ("components (sign-in set-up)", ("onboarding", "profile_access")),
    ("slots", ("keys",)),
    ("edges", ("middlewares", "proxy", "health", "web")),
    ("wiring", ("app",)),
    ("entry", ("cli",)),
)
COMPONENT_ROWS = {"components (foundations)", "components", "components (features)", "components (sign-in set-up)"}
# proxy*.py is one edge in three modules (HTTP, header hygiene, WebSocket); `python -m gateway` is the CLI;
# the session cache is part of the Redis session store.
GROUP_OF = {"proxy_headers": "proxy", "proxy_ws": "proxy", "__main__": "cli", "session_cache": "sessions"}
# The edge helpers every edge may import: the request's audit facts (who, which session, from where).
# the sign-in limits as a request meets them (the middleware, ext_authz and the OAuth routes alike), and the
# request limits (bodies, Expect: 100-continue) that the proxy and the gateway's own routes share, and who a
# request on a notebook's own origin is (its credential), which the middleware chain asks.
SHARED_EDGE_HELPERS = frozenset(
    {"gateway.web.audit_request", "gateway.web.signin", "gateway.web.limits", "gateway.web.notebook_login"}
    | {"gateway.web.responses"}  # and how every edge answers with an error
)

# Imports that break the rules today, each being fixed on another branch. The test fails when one
# of them is gone (remove it here) and when a new one appears: this set only ever shrinks.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset(
    {
        # The development OIDC provider is an aiohttp application of its own, in a component package.
        ("gateway.auth.devprovider", "aiohttp.web"),
    }
)


def module_name(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def gateway_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(GATEWAY.rglob("*.py"))}


def group(module: str) -> str:
    """The package or top-level module that `module` belongs to: gateway.web.api -> web."""
    top = module.split(".")[1] if "." in module else module
    return GROUP_OF.get(top, top)


ROW_OF = {name: index for index, (_, names) in enumerate(ROWS) for name in names}


def imports(module: str, source: str, known: set[str]) -> set[str]:
    """What `module` imports: gateway modules (resolved, `from pkg import mod` naming the module)
    and `aiohttp.web`. Imports under TYPE_CHECKING and inside functions count too."""
    is_package = any(name.startswith(f"{module}.") for name in known)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            targets = [name for name in submodules if name in known] or [base]
            if base == "aiohttp" and any(alias.name == "web" for alias in node.names):
                targets.append("aiohttp.web")
        else:
            continue
        for target in targets:
            if target == "aiohttp.web" or target.startswith("aiohttp.web_"):
                found.add("aiohttp.web")
            elif target.startswith("gateway.") or target == "gateway":
                found.add(target)
    return found


def violations(module: str, imported: set[str]) -> set[tuple[str, str]]:
    """The imports of `module` that go up the table, sideways into another group, or (for a
    component) into aiohttp.web."""
    if module == "gateway":  # the root package imports nothing, so importing one module loads only that
        return {(module, target) for target in imported}
    row = ROW_OF[group(module)]
    bad: set[tuple[str, str]] = set()
    for target in imported:
        if target == "aiohttp.web":
            if ROWS[row][0] in COMPONENT_ROWS:
                bad.add((module, target))
            continue
        if target == "gateway" or group(target) == group(module):
            continue
        target_row = ROW_OF[group(target)]
        shared = target in SHARED_EDGE_HELPERS and ROWS[row][0] == "edges"
        if target_row >= row and not shared:
            bad.add((module, target))
    return bad


def import_graph() -> dict[str, set[str]]:
    modules = gateway_modules()
    known = set(modules)
    return {module: imports(module, path.read_text(), known) for module, path in modules.items()}


def all_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {pair for module, imported in graph.items() for pair in violations(module, imported)}


def describe(pairs: AbstractSet[tuple[str, str]]) -> str:
    def row(module: str) -> str:
        return "aiohttp" if module == "aiohttp.web" else ROWS[ROW_OF[group(module)]][0]

    return "\n".join(f"{a} ({row(a)}) imports {b} ({row(b)})" for a, b in sorted(pairs))


def test_every_module_has_a_row_and_every_row_names_real_modules() -> None:
    groups = {group(module) for module in gateway_modules() if module != "gateway"}
    unplaced = sorted(groups - set(ROW_OF))
    assert not unplaced, f"place these in a row of ROWS (and README.md's code map): {unplaced}"
    missing = sorted(set(ROW_OF) - groups)
    assert not missing, f"ROWS names modules that do not exist: {missing}"


def test_the_readme_code_map_names_every_module_and_package() -> None:
    readme = (GATEWAY.parent / "README.md").read_text()
    code_map = readme[readme.index("## Code map") :].split("\n## ", 1)[0]
    paths = [path.relative_to(GATEWAY) for path in GATEWAY.rglob("*.py")]
    # A package by its folder (`web/`), a top-level module by its file (`app.py`).
    names = {f"`{path.parts[0]}/`" if len(path.parts) > 1 else f"`{path.name}`" for path in paths}
    names.discard("`__init__.py`")
    missing = sorted(name for name in names if name not in code_map)
    assert not missing, f"README.md's code map does not mention {missing}"


def test_imports_flow_down_the_table() -> None:
    new = all_violations(import_graph()) - KNOWN_VIOLATIONS
    assert not new, "imports against the layering (STYLE.md section 1):\n" + describe(new)


def test_every_known_violation_still_exists() -> None:
    fixed = KNOWN_VIOLATIONS - all_violations(import_graph())
    assert not fixed, "fixed, so remove from KNOWN_VIOLATIONS:\n" + describe(fixed)


def test_no_module_or_package_imports_itself_in_a_circle() -> None:
    graph = import_graph()
    modules = {module: {t for t in imported if t in graph and t != module} for module, imported in graph.items()}
    # Between groups, the known violations aside (two of them close a circle today: auth <-> web, auth <-> keys).
    groups: dict[str, set[str]] = {}
    for module, imported in graph.items():
        for target in imported:
            if target in graph and (module, target) not in KNOWN_VIOLATIONS and group(target) != group(module):
                groups.setdefault(group(module), set()).add(group(target))
    for name, edges in (("modules", modules), ("packages", groups)):
        try:
            graphlib.TopologicalSorter(edges).prepare()
        except graphlib.CycleError as exc:
            # graphlib lists the cycle from importee to importer; reversed, each one imports the next.
            pytest.fail(f"an import cycle between {name}: {' imports '.join(reversed(exc.args[1]))}")


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("gateway.sessions", "from . import keys", {("gateway.sessions", "gateway.keys")}),  # up
        (
            "gateway.backends.local",
            "from ..web import audit_request",
            {("gateway.backends.local", "gateway.web.audit_request")},
        ),
        (
            "gateway.routing",
            "from .kube.client import KubeClient",
            {("gateway.routing", "gateway.kube.client")},
        ),  # sideways
        ("gateway.profiles", "from aiohttp import web", {("gateway.profiles", "aiohttp.web")}),
        ("gateway.kube.client", "import aiohttp.web_request", {("gateway.kube.client", "aiohttp.web")}),
        ("gateway.health", "from .proxy import handle", {("gateway.health", "gateway.proxy")}),  # edge to edge
        (
            "gateway.audit.log",
            "if TYPE_CHECKING:\n    from ..app import create_app",
            {("gateway.audit.log", "gateway.app")},
        ),
        ("gateway.proxy", "from .web import audit_request\nfrom . import proxy_ws", set()),  # shared helper, own group
        ("gateway.backends.local", "from . import Notebook\nfrom ..routing import is_dns_label", set()),
        ("gateway.cli.main", "from ..app import create_app\nfrom . import audit", set()),
    ],
)
def test_the_check_catches_imports_up_and_sideways(module: str, source: str, expected: set[tuple[str, str]]) -> None:
    known = set(gateway_modules())
    assert violations(module, imports(module, source, known)) == expected
