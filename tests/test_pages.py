"""The server side of the pages: who sees what, which namespace is shown, headers and redirects.
What the pages do in a browser is in test_pages_browser.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from gateway import keys
from gateway.backends import NotebookSpec
from gateway.backends.local import Paths, Record, create_files
from gateway.spawner import SpawnerConfig
from gateway.web.pages import NAMESPACE_COOKIE, has_api

from .browser import write_policy
from .conftest import BROWSER_HEADERS

Factory = Callable[..., Any]
# alice administers her namespace and edits in team-a; bob may only look at his; carol runs the cluster.
TEAM = (
    "user:alice@example.com, alice, admin",
    "user:alice@example.com, team-a, edit",
    "user:bob@example.com, bob, view",
)


def team(directory: Path) -> dict[str, Any]:
    """Settings for a gateway with the TEAM's policy and carol as a bootstrap cluster-admin."""
    policy = write_policy(directory, *TEAM)
    return {
        "backend": "local",
        "local_dir": directory / "notebooks",
        "policy_file": policy,
        "bootstrap_admins": "carol@example.com",
    }


def leave_stopped_notebook(directory: Path, namespace: str, name: str) -> None:
    """What the local backend finds on disk for a server stopped before the gateway started: no Jupyter runs."""
    spec = NotebookSpec(name=name, image=SpawnerConfig.load().image)
    record = Record(namespace, name, spec, datetime(2024, 5, 1, tzinfo=UTC), "alice@example.com", stopped=True)
    create_files(Paths.of(directory, namespace, name), record, [])


def guide_block(marker: str) -> str:
    """The fenced code block that follows `<!-- marker ... -->` in docs/users.md."""
    text = (Path(__file__).parents[1] / "docs" / "users.md").read_text()
    match = re.search(rf"<!-- {marker}\b[^>]*-->\n```\w*\n(.*?)\n```", text, re.S)
    assert match is not None, f"no code block after <!-- {marker} --> in docs/users.md"
    return match.group(1)


def initial_notebooks(page: str) -> list[dict[str, Any]]:
    match = re.search(r'<script type="application/json" id="initial-notebooks">(.*?)</script>', page, re.S)
    assert match is not None
    return list(json.loads(match.group(1)))


async def test_the_root_shows_the_notebook_servers(gateway_factory: Factory, tmp_path: Path) -> None:
    client = await gateway_factory(backend="local", local_dir=tmp_path)
    response = await client.get("/?ns=alice", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/notebooks?ns=alice"


async def test_signed_out_visitors_are_sent_to_sign_in_and_back(gateway_factory: Factory, tmp_path: Path) -> None:
    client = await gateway_factory(user=None, backend="local", local_dir=tmp_path)
    response = await client.get("/notebooks/new?ns=alice", headers=BROWSER_HEADERS, allow_redirects=False)
    assert response.status == 302
    location = URL(response.headers["Location"])
    assert (location.path, location.query["rd"]) == ("/oauth2/start", "/notebooks/new?ns=alice")


async def test_the_landing_page_needs_no_session(gateway_factory: Factory, tmp_path: Path) -> None:
    client = await gateway_factory(user=None, backend="local", local_dir=tmp_path)
    response = await client.get("/welcome", headers=BROWSER_HEADERS)
    assert response.status == 200
    page = await response.text()
    assert 'href="/oauth2/start?rd=%2Fnotebooks"' in page
    assert "accepts any username" in page  # dev mode says so
    assert "SIGN OUT" not in page


async def test_the_list_page_carries_the_servers_and_strict_headers(gateway_factory: Factory, tmp_path: Path) -> None:
    leave_stopped_notebook(tmp_path, "alice", "old")
    client = await gateway_factory(backend="local", local_dir=tmp_path)
    response = await client.get("/notebooks", headers=BROWSER_HEADERS)
    page = await response.text()
    assert 'data-namespace="alice"' in page
    assert [(item["name"], item["status"]["phase"]) for item in initial_notebooks(page)] == [("old", "stopped")]
    assert "alice@example.com" in page and "SIGN OUT" in page
    # Written from the threat, not copied from the code: no framing (clickjacking), scripts and styles from
    # this origin only, no plugins, no <base> rewriting, no MIME sniffing, no referrer leaving the site, no caching.
    csp = {part.strip() for part in response.headers["Content-Security-Policy"].split(";")}
    assert csp >= {"default-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"}
    assert not any("unsafe-inline" in part or "unsafe-eval" in part or "*" in part.split() for part in csp)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.cookies[NAMESPACE_COOKIE].value == "alice"


async def test_a_namespace_without_a_role_is_refused(gateway_factory: Factory, tmp_path: Path) -> None:
    client = await gateway_factory(**team(tmp_path))
    response = await client.get("/notebooks?ns=bob", headers=BROWSER_HEADERS)
    assert response.status == 403
    page = await response.text()
    assert "You have no access to the namespace &#39;bob&#39;" in page
    assert '<option value="bob"' not in page


async def test_the_remembered_namespace_is_shown(gateway_factory: Factory, tmp_path: Path) -> None:
    client = await gateway_factory(**team(tmp_path))
    client.session.cookie_jar.update_cookies({NAMESPACE_COOKIE: "team-a"})
    page = await (await client.get("/notebooks", headers=BROWSER_HEADERS)).text()
    assert 'data-namespace="team-a"' in page
    assert '<option value="team-a" selected>team-a (edit)</option>' in page
    client.session.cookie_jar.update_cookies({NAMESPACE_COOKIE: "bob"})  # no longer (or never) allowed
    page = await (await client.get("/notebooks", headers=BROWSER_HEADERS)).text()
    assert 'data-namespace="alice"' in page


async def test_a_viewer_gets_no_buttons_that_change_things(gateway_factory: Factory, tmp_path: Path) -> None:
    client = await gateway_factory(user="bob@example.com", **team(tmp_path))
    page = await (await client.get("/notebooks", headers=BROWSER_HEADERS)).text()
    assert 'data-namespace="bob" data-allowed=""' in page
    assert "NEW SERVER" not in page
    assert (await client.get("/notebooks/new", headers=BROWSER_HEADERS)).status == 403


async def test_a_user_without_any_namespace_is_told_what_to_do(gateway_factory: Factory, tmp_path: Path) -> None:
    client = await gateway_factory(backend="local", local_dir=tmp_path, auto_profile=False)
    page = await (await client.get("/notebooks", headers=BROWSER_HEADERS)).text()
    assert "You have no namespace yet" in page
    assert "NEW SERVER" not in page


async def test_the_form_offers_the_configured_defaults(gateway_factory: Factory, tmp_path: Path) -> None:
    client = await gateway_factory(backend="local", local_dir=tmp_path)
    page = await (await client.get("/notebooks/new?ns=alice", headers=BROWSER_HEADERS)).text()
    spawner = client.app[keys.SPAWNER]
    assert f'<option value="{spawner.image}" selected>{spawner.image}</option>' in page
    assert all(
        f'<option value="{image}"{" selected" if image == spawner.image else ""}>{image}</option>' in page
        for image in spawner.images
    )
    assert 'id="cpu" name="cpu" value="0.5"' in page
    assert 'id="memory" name="memory" value="1.0Gi"' in page
    assert 'placeholder="0.6"' in page and 'placeholder="1.2Gi"' in page  # the limits an empty field gets
    # The local backend runs JupyterLab processes: no other server types, GPUs or pod settings offered.
    assert 'name="serverType"' not in page and 'id="gpu-count"' not in page and 'id="shm"' not in page


async def test_admin_links_are_shown_to_those_who_may_use_them(gateway_factory: Factory, tmp_path: Path) -> None:
    links = {}
    for user in ("alice@example.com", "bob@example.com", "carol@example.com"):
        client = await gateway_factory(user=user, **team(tmp_path / user))
        page = await (await client.get("/notebooks", headers=BROWSER_HEADERS)).text()
        links[user] = [link for link in ("/access", "/profiles", "/policies", "/audit") if f'href="{link}"' in page]
    assert links == {
        "alice@example.com": ["/access"],
        "bob@example.com": [],
        "carol@example.com": ["/access", "/policies", "/audit"],  # no Profiles: not the Kubernetes backend
    }


async def test_admin_pages_refuse_those_who_may_not_use_them(gateway_factory: Factory, tmp_path: Path) -> None:
    alice = await gateway_factory(**team(tmp_path))
    assert (await alice.get("/policies", headers=BROWSER_HEADERS)).status == 403
    assert (await alice.get("/audit", headers=BROWSER_HEADERS)).status == 403
    assert (await alice.get("/profiles", headers=BROWSER_HEADERS)).status == 403
    assert (await alice.get("/access?ns=bob", headers=BROWSER_HEADERS)).status == 403
    page = await (await alice.get("/access", headers=BROWSER_HEADERS)).text()
    assert 'data-namespace="alice"' in page  # the one she administers


async def test_a_cluster_admin_opens_any_namespace_by_name(gateway_factory: Factory, tmp_path: Path) -> None:
    carol = await gateway_factory(user="carol@example.com", **team(tmp_path))
    page = await (await carol.get("/notebooks?ns=team-a", headers=BROWSER_HEADERS)).text()
    assert 'data-namespace="team-a"' in page
    assert '<option value="*"' not in page  # a cluster-wide role is no namespace to pick
    assert 'data-namespace="team-a"' in await (await carol.get("/access?ns=team-a", headers=BROWSER_HEADERS)).text()


def test_an_api_is_found_whatever_its_parameters_are_called() -> None:
    app = web.Application()
    app.router.add_get("/api/namespaces/{ns}/access", _nothing)
    assert has_api(app, "/api/namespaces/{}/access")
    assert not has_api(app, "/api/policies")


async def _nothing(request: web.Request) -> web.Response:
    return web.Response()


def test_the_guides_pictures_are_taken_by_the_browser_tests() -> None:
    docs = Path(__file__).parents[1] / "docs"
    guides = "".join((docs / name).read_text() for name in ("users.md", "admins.md", "security.md"))
    pictures = set(re.findall(r"\]\(images/([a-z-]+)\.png\)", guides))
    browser_tests = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*_browser.py"))
    taken = set(re.findall(r'screenshot\([a-z]+, "([a-z-]+)"', browser_tests))
    assert pictures == taken
    assert all((docs / "images" / f"{name}.png").is_file() for name in pictures)


async def test_with_a_dashboard_origin_only_that_origin_may_frame_the_pages(
    gateway_factory: Factory, tmp_path: Path
) -> None:
    client = await gateway_factory(backend="local", local_dir=tmp_path, dashboard_origin="https://KF.example.com/")
    for path in ("/notebooks", "/notebooks/new", "/configurations"):
        response = await client.get(path, headers=BROWSER_HEADERS)
        assert response.status == 200, path
        csp = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
        # Exactly one frame-ancestors, naming the dashboard alone: not 'self', not a wildcard, not a scheme.
        assert [part for part in csp if part.startswith("frame-ancestors")] == [
            "frame-ancestors https://kf.example.com"
        ]
        # X-Frame-Options cannot name an origin; left at DENY, browsers that honour it would refuse the dashboard.
        assert "X-Frame-Options" not in response.headers
        page = await response.text()
        assert '<meta name="dashboard-origin" content="https://kf.example.com">' in page
        assert '<script src="/static/dashboard.js" defer></script>' in page


async def test_without_a_dashboard_origin_the_pages_load_no_dashboard_script(
    gateway_factory: Factory, tmp_path: Path
) -> None:
    client = await gateway_factory(backend="local", local_dir=tmp_path)
    page = await (await client.get("/notebooks", headers=BROWSER_HEADERS)).text()
    assert "dashboard" not in page
