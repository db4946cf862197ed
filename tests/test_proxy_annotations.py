"""gateway/backends/proxy_annotations.py: VS Code and RStudio servers (which serve `/`) reached through
the gateway as Kubeflow's notebook controller routes them, from the Notebook's annotations, on the
kubernetes backend (fake API) and on static routes; hostile annotation values change nothing that
the gateway vouches for and are logged.

What the controller does with the annotations (kubeflow/kubeflow, notebook_controller.go,
generateVirtualService): match prefix `/notebook/<ns>/<name>/`, `rewrite.uri` = the http-rewrite-uri
annotation when non-empty (else the prefix), `headers.request.set` = the http-headers-request-set
annotation parsed as a JSON map of strings (an empty map when it does not parse). The Jupyter web
app (form.py, set_server_type) writes `/` for VS Code and RStudio, and
`{"X-RStudio-Root-Path":"/notebook/<ns>/<name>/"}` for RStudio.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from gateway import keys
from gateway.backends import NotebookSpec
from gateway.backends.kubernetes import KubernetesBackend
from gateway.backends.notebook_resource import notebook_object
from gateway.backends.notebook_watcher import service_resolver
from gateway.backends.proxy_annotations import DEFAULT, ProxyBehaviour, from_annotations
from gateway.backends.static import load_routes
from gateway.kube.kubeflow_names import HEADERS_ANNOTATION, URI_REWRITE_ANNOTATION
from gateway.routing import parse
from tests.fakes.kube_api import FakeKubeAPI
from tests.fakes.kube_controller import KubeController
from tests.fakes.root_server import ROOT_PATH_HEADER, RootServer
from tests.fakes.upstream import FakeUpstream
from tests.origins import in_both_origin_modes  # noqa: F401  (fixture: the gateway tests run in both)

from .conftest import Client, wait_until

Factory = Callable[..., Any]
IMAGE = "ghcr.io/kubeflow/kubeflow/notebook-servers/codeserver-python:v1.10.0"
LOGGER = "gateway.backends.proxy_annotations"


def new_server(name: str, server_type: str, namespace: str = "alice") -> dict[str, Any]:
    """A new server of this type as the gateway (as the Jupyter web app) creates it."""
    return notebook_object(namespace, NotebookSpec(name=name, image=IMAGE, server_type=server_type), creator=None)


def written_annotations(server_type: str, name: str = "nb", namespace: str = "alice") -> dict[str, str]:
    metadata: Any = new_server(name, server_type, namespace)["metadata"]
    return dict(metadata["annotations"])


# -- resolving the annotations ------------------------------------------------------------------------


def test_jupyter_keeps_its_prefix_and_vs_code_and_rstudio_are_served_from_the_root() -> None:
    assert from_annotations("alice", "nb", written_annotations("jupyter")) is DEFAULT
    assert from_annotations("alice", "code", written_annotations("group-one", "code")) == ProxyBehaviour("/")
    rstudio = from_annotations("alice", "rs", written_annotations("group-two", "rs"))
    assert rstudio == ProxyBehaviour("/", ((ROOT_PATH_HEADER, ROOT_PATH_HEADER.lower(), "/notebook/alice/rs/"),))
    target = parse("/notebook/alice/rs/p/a%20b?x=1")
    assert target is not None
    assert str(rstudio.upstream_url(URL("http://rs.alice.svc:8080"), target)) == "http://rs.alice.svc:8080/p/a%20b?x=1"


def test_empty_annotations_keep_the_prefix_as_the_controller_does() -> None:
    assert from_annotations("alice", "nb", {URI_REWRITE_ANNOTATION: "", HEADERS_ANNOTATION: ""}) is DEFAULT


HOSTILE_HEADERS = [
    "kubeflow-userid",  # who the visitor is: the gateway's to say
    "Kubeflow-Groups",
    "X-Forwarded-User",
    "X-Auth-Request-Email",
    "X-Remote-User",
    "X_Remote_User",  # folded into X-Remote-User by some servers
    "X-Forwarded-For",  # where the visitor came from
    "X-Real-IP",
    "Forwarded",
    "Host",  # where the request goes
    "X-Original-URL",
    "Cookie",  # the visitor's credentials
    "Authorization",
    "Proxy-Authorization",
    "Connection",  # how the request is framed
    "Transfer-Encoding",
    "Content-Length",
    "Content-Type",
    "Upgrade",
    "TE",
    "Origin",  # what guards the visitor
    "Sec-Fetch-Site",
    "X-XSRFToken",
    "X-Goog-Authenticated-User-Email",
    "X Space",
    "X-Bad:Name",
    "",
]


@pytest.mark.parametrize("header", HOSTILE_HEADERS)
def test_headers_that_speak_for_the_gateway_or_the_visitor_are_refused_and_logged(
    header: str, caplog: pytest.LogCaptureFixture
) -> None:
    value = json.dumps({header: "admin", "X-Fine": "yes"})
    with caplog.at_level(logging.WARNING, LOGGER):
        behaviour = from_annotations("alice", f"h{len(header)}", {HEADERS_ANNOTATION: value})
    assert behaviour.headers == (("X-Fine", "x-fine", "yes"),)
    assert behaviour.rewrite is None
    assert any("alice/" in r.getMessage() and "not setting a header" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('{"X-A": "line\\r\\nX-Injected: 1"}', "non-printable"),
        ('{"X-A": "\\u00e9t\\u00e9"}', "non-printable"),
        ('{"X-A": "%s"}' % ("v" * 1025), "longer than 1024"),
        ('{"X-A": 1}', "not a string"),
        ('{"X-A": "one", "x-a": "two"}', "named twice"),
        ('{"%s": "v"}' % ("X" * 65), "is not letters"),
    ],
)
def test_bad_header_values_are_refused(value: str, why: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        behaviour = from_annotations("alice", "v", {HEADERS_ANNOTATION: value})
    assert all(value_ in ("one",) for _, _, value_ in behaviour.headers)  # only the first of a twice-named one
    assert why in caplog.text


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not json", "not a JSON object"),
        ('[["X-A", "v"]]', "not a JSON object"),  # an array of pairs is not the map the controller reads
        ('"X-A: v"', "not a JSON object"),
        ("{" + ",".join(f'"X-{i}": "v"' for i in range(17)) + "}", "more than 16 headers"),
        ('{"X-A": "%s"}' % ("v" * 4100), "longer than 4096"),
    ],
)
def test_a_headers_annotation_that_is_not_a_small_json_map_sets_nothing(
    value: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        assert from_annotations("alice", "m", {HEADERS_ANNOTATION: value}) is DEFAULT
    assert why in caplog.text


@pytest.mark.parametrize(
    "rewrite",
    [
        "/../admin/",
        "/a/./",
        "/%2e%2e/",
        "/a%2fb/",
        "//evil.example/",
        "http://evil.example/",
        "relative/",
        "/no-trailing-slash",
        "/a?b=1/",
        "/a#b/",
        "/tab\t/",
        "/" + "a" * 300 + "/",
    ],
)
def test_a_rewrite_that_is_not_a_clean_absolute_path_keeps_the_prefix(
    rewrite: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        assert from_annotations("alice", "r", {URI_REWRITE_ANNOTATION: rewrite}) is DEFAULT
    assert f"ignoring {URI_REWRITE_ANNOTATION}" in caplog.text


def test_a_header_the_proxy_drops_is_never_set_even_if_it_passed_the_check() -> None:
    # An operator's own identity header (GATEWAY_USERID_HEADER) is known only to the proxy's drop set.
    behaviour = from_annotations("alice", "d", {HEADERS_ANNOTATION: '{"X-Team-User": "admin", "X-Ok": "1"}'})
    headers: dict[str, str] = {"X-Team-User": "alice@example.com"}
    behaviour.set_headers(headers, frozenset({"x-team-user"}))
    assert headers == {"X-Team-User": "alice@example.com", "X-Ok": "1"}


# -- through the gateway, kubernetes backend ------------------------------------------------------------


@pytest.fixture
def gateways(gateway_factory: Factory, kube_api: FakeKubeAPI, tmp_path: Path) -> Factory:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")

    async def make(**settings: Any) -> Client:
        client: Client = await gateway_factory(backend="kubernetes", kubeconfig=kubeconfig, **settings)
        return client

    return make


async def serve(client: Client, kube_api: FakeKubeAPI, notebook: dict[str, Any], url: str) -> None:
    """Create `notebook` in alice's namespace (as the web app or kubectl would) and run it at `url`."""
    name = notebook["metadata"]["name"]
    kube_api.create("notebooks", notebook, "alice")
    backend = client.app[keys.BACKEND]
    assert isinstance(backend, KubernetesBackend)
    controller = KubeController(kube_api)
    backend.set_route_resolver(controller.resolver(service_resolver("cluster.local")))
    controller.serve("alice", name, url)
    await wait_until(lambda: backend.route("alice", name) == URL(url))


async def test_a_vs_code_server_is_served_from_its_root_over_http_and_websocket(
    gateways: Factory, kube_api: FakeKubeAPI, aiohttp_server: Any
) -> None:
    code_server = await RootServer.start(aiohttp_server)
    client = await gateways()
    await serve(client, kube_api, new_server("code", "group-one"), code_server.url)
    resp = await client.get("/notebook/alice/code/")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["path"] == "/"
    resp = await client.get("/notebook/alice/code/echo?folder=/home/jovyan")
    seen = await resp.json()
    assert (seen["path"], seen["query"]) == ("/echo", "folder=/home/jovyan")
    assert seen["headers"]["kubeflow-userid"] == "alice@example.com"
    async with client.ws_connect("/notebook/alice/code/ws") as ws:
        handshake = await ws.receive_json()
        assert handshake["path"] == "/ws"
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"


async def test_a_jupyter_server_keeps_its_prefix(gateways: Factory, kube_api: FakeKubeAPI, aiohttp_server: Any) -> None:
    # The same root-serving server, created as Jupyter: nothing is rewritten, so it answers 404 as code-server would.
    code_server = await RootServer.start(aiohttp_server)
    client = await gateways()
    await serve(client, kube_api, new_server("lab", "jupyter"), code_server.url)
    assert (await client.get("/notebook/alice/lab/echo")).status == 404


async def test_an_rstudio_server_gets_its_root_path_and_the_client_cannot_change_it(
    gateways: Factory, kube_api: FakeKubeAPI, aiohttp_server: Any
) -> None:
    rstudio = await RootServer.start(aiohttp_server, root_path_header=True)
    client = await gateways()
    await serve(client, kube_api, new_server("rs", "group-two"), rstudio.url)
    resp = await client.get("/notebook/alice/rs/", headers={ROOT_PATH_HEADER: "/elsewhere/"})
    assert resp.status == 200, await resp.text()
    seen = await resp.json()
    assert (seen["path"], seen["headers"][ROOT_PATH_HEADER]) == ("/", "/notebook/alice/rs/")
    async with client.ws_connect("/notebook/alice/rs/ws") as ws:
        handshake = await ws.receive_json()
        assert (handshake["path"], handshake["headers"][ROOT_PATH_HEADER]) == ("/ws", "/notebook/alice/rs/")


async def test_hostile_annotations_change_nothing_the_gateway_vouches_for(
    gateways: Factory,
    kube_api: FakeKubeAPI,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    notebook_origins: str,
) -> None:
    # The namespace's editor writes the Notebook with kubectl; someone else opens it. (A refusal is
    # logged once per notebook and value in a process: a name per origin mode, so each run sees it.)
    name = f"trap-{notebook_origins}"
    notebook = new_server(name, "jupyter")
    notebook["metadata"]["annotations"] |= {
        URI_REWRITE_ANNOTATION: "/../../admin/",
        HEADERS_ANNOTATION: '{"kubeflow-userid": "admin@example.com", "Host": "evil.example", "Cookie": "a=b", '
        '"X-Forwarded-For": "10.0.0.1", "Authorization": "Bearer stolen", "X-Team": "data"}',
    }
    client = await gateways()
    with caplog.at_level(logging.WARNING, LOGGER):
        await serve(client, kube_api, notebook, upstream.url)
    resp = await client.get(f"/notebook/alice/{name}/echo")
    assert resp.status == 200
    seen = await resp.json()
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert seen["raw_path"] == f"/notebook/alice/{name}/echo"  # the rewrite was refused: the prefix stays
    assert headers["kubeflow-userid"] == "alice@example.com"
    assert headers["x-team"] == "data"
    assert "evil.example" not in headers["host"] and headers["x-forwarded-for"] != "10.0.0.1"
    assert "cookie" not in headers and "authorization" not in headers
    assert "ignoring notebooks.kubeflow.org/http-rewrite-uri" in caplog.text
    assert "'Authorization' is reserved" in caplog.text


async def test_an_edited_annotation_takes_effect_with_the_watch(
    gateways: Factory, kube_api: FakeKubeAPI, aiohttp_server: Any
) -> None:
    code_server = await RootServer.start(aiohttp_server)
    client = await gateways()
    await serve(client, kube_api, new_server("later", "jupyter"), code_server.url)
    assert (await client.get("/notebook/alice/later/echo")).status == 404
    kube_api.patch("notebooks", "alice", "later", {"metadata": {"annotations": {URI_REWRITE_ANNOTATION: "/"}}})
    backend = client.app[keys.BACKEND]
    await wait_until(lambda: backend.proxy_behaviour("alice", "later").rewrite == "/")
    assert (await client.get("/notebook/alice/later/echo")).status == 200


# -- static routes ------------------------------------------------------------------------------------


async def test_static_routes_carry_the_rewrite_and_headers(
    gateway_factory: Factory, aiohttp_server: Any, tmp_path: Path
) -> None:
    rstudio = await RootServer.start(aiohttp_server, root_path_header=True)
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[[route]]\nnamespace = "alice"\nname = "rs"\nurl = "{rstudio.url}"\nrewrite_uri = "/"\n'
        '[route.request_headers]\n"X-RStudio-Root-Path" = "/notebook/alice/rs/"\n'
    )
    client = await gateway_factory(routes_file=routes)
    seen = await (await client.get("/notebook/alice/rs/echo")).json()
    assert (seen["path"], seen["headers"][ROOT_PATH_HEADER]) == ("/echo", "/notebook/alice/rs/")


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ('rewrite_uri = "/../"', "rewrite_uri '/../'"),
        ("rewrite_uri = 1", "'rewrite_uri' is not a string"),
        ('request_headers = {"kubeflow-userid" = "admin"}', "'kubeflow-userid' is reserved"),
        ('request_headers = {"X-A" = "a\\nb"}', "non-printable"),
        ('request_headers = "X-A: b"', "must be a table"),
    ],
)
def test_static_routes_refuse_what_annotations_may_not_do(extra: str, why: str, tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(f'[[route]]\nnamespace = "alice"\nname = "rs"\nurl = "http://127.0.0.1:9"\n{extra}\n')
    with pytest.raises(ValueError, match="entry 1") as refused:
        load_routes(routes)
    assert why in str(refused.value)
