"""The canonical path parse: what it accepts, what it refuses, and that no upstream can be fooled."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.errors import InvalidPath
from gateway.routing import NotebookPath, parse, upstream_url


def hostile_normalise(path: str) -> str:
    """What the laxest server could make of a path: decode every layer of %-escapes, treat `\\` as
    `/`, drop `;params`, collapse `//` and resolve dot segments."""
    for _ in range(8):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    path = re.sub(r";[^/]*", "", path)
    normal = posixpath.normpath(path)
    return normal + "/" if path.endswith("/") and not normal.endswith("/") else normal


SEGMENT_PIECES = ["alice", "nb1", "bob", "..", ".", "%2e", "%2E%2e", "%252e", "%2f", "%2F", "%5c", "%255c",
                  "\\", ";", "..;x", "%00", "\x00", "\t", "%0a", "\r", "a b", "%", "%zz", "%ff", "é", "lab",
                  "api", "-", "x.y", "~", "", "?", "#", "%3f"]  # fmt: skip

segments = st.lists(st.sampled_from(SEGMENT_PIECES), min_size=0, max_size=4).map("".join)
paths = st.builds(
    lambda head, parts, query: head + "/".join(parts) + query,
    st.sampled_from(["/notebook/", "/notebook/alice/", "/notebook/alice/nb1/", "/", "/api/", "//notebook/"]),
    st.lists(segments, min_size=0, max_size=6),
    st.sampled_from(["", "?x=1", "?path=%2e%2e/bob", "?a=/notebook/bob/nb/"]),
)


def readme_refuses(raw_path: str) -> bool:
    """The README's promise, written without the parser: a path is refused when any layer of %-decoding of one of
    its segments is a dot segment ('.' or '..', path parameters aside), holds a '/', a '\\' or a control character,
    or when the path has an empty segment ('//') before its end."""
    segments = raw_path[1:].split("/")
    if any(segment == "" for segment in segments[:-1]):
        return True
    for segment in segments:
        layer, layers = segment, [segment]
        for _ in range(8):
            layer = unquote(layer)
            layers.append(layer)
        if any(text.split(";")[0] in (".", "..") for text in layers):
            return True
        if any("\\" in text or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text) for text in layers):
            return True
        if any("/" in text for text in layers[1:]):
            return True
    return False


@given(paths)
@settings(max_examples=3000, deadline=None)
@example("/notebook/alice/nb1/./x")
@example("/notebook/alice/nb1/%2e/x")
@example("/notebook/alice/nb1/%252E;x/y")
@example("/notebook/alice/nb1/%2e%2e/%2e%2e/bob/nb2/")
@example("/notebook/alice/nb1/..%5c..%5cbob/nb2/")
@example("/notebook/alice/nb1/%252e%252e/x")
def test_an_accepted_path_reaches_exactly_the_routed_notebook(path: str) -> None:
    try:
        target = parse(path)
    except InvalidPath:
        return
    assert not readme_refuses(path.split("?")[0]), "the README says this path is refused"
    if target is None:
        assert not path.split("?")[0].startswith("/notebook/")
        return
    upstream = upstream_url(URL("http://10.0.0.1:8888"), target)
    sent = upstream.raw_path
    assert sent.startswith(target.prefix)
    assert hostile_normalise(sent).startswith(target.prefix.rstrip("/"))
    assert hostile_normalise(sent + "/").startswith(target.prefix)


def test_a_notebook_path_is_split_into_namespace_name_and_untouched_rest() -> None:
    target = parse("/notebook/alice/nb1/api/contents/my%20file.ipynb?content=1&path=%2Fx")
    assert target == NotebookPath("alice", "nb1", "api/contents/my%20file.ipynb", "content=1&path=%2Fx", True)
    assert target.upstream_path_qs == "/notebook/alice/nb1/api/contents/my%20file.ipynb?content=1&path=%2Fx"


def test_the_upstream_url_is_not_renormalised_by_yarl() -> None:
    target = parse("/notebook/alice/nb1/files/a%3Fb%23c/x%2Dy")
    assert target is not None
    url = upstream_url(URL("http://127.0.0.1:9/ignored/base"), target)
    assert str(url) == "http://127.0.0.1:9/notebook/alice/nb1/files/a%3Fb%23c/x%2Dy"


def test_a_path_without_the_trailing_slash_is_marked_for_redirect() -> None:
    target = parse("/notebook/alice/nb1?x=1")
    assert target is not None and not target.has_slash and target.query == "x=1"


def test_paths_outside_notebook_are_not_notebook_paths() -> None:
    assert parse("/api/namespaces/alice/notebooks") is None
    assert parse("/") is None


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/notebook/alice/nb1/../../bob/nb2/", "'.' or '..'"),
        ("/notebook/alice/nb1/%2e%2e/bob", "'.' or '..'"),
        ("/notebook/alice/nb1/%252e%252e/bob", "'.' or '..'"),
        ("/notebook/alice/nb1/..;jsessionid=1/bob", "'.' or '..'"),
        ("/notebook/alice/nb1/./x", "'.' or '..'"),
        ("/notebook/alice/nb1/.", "'.' or '..'"),
        ("/notebook/alice/nb1/%2e/x", "'.' or '..'"),
        ("/notebook/alice/nb1/%2E", "'.' or '..'"),
        ("/notebook/alice/nb1/%252e/x", "'.' or '..'"),
        ("/notebook/alice/nb1/.;x/y", "'.' or '..'"),
        ("/api/./policies", "'.' or '..'"),
        ("/notebook/alice/nb1/a%2fb", "encoded '/'"),
        ("/notebook/alice/nb1/a%5Cb", "encoded '/'"),
        ("/notebook/alice/nb1/a%252Fb", "encoded '/'"),
        ("/notebook/alice/nb1/a\\b", "percent-encoded"),
        ("/notebook/alice/nb1/a%00b", "control character"),
        ("/notebook/alice/nb1/a\x00b", "percent-encoded"),
        ("/notebook/alice/nb1/a%0d%0aX-Evil:1", "control character"),
        ("/notebook/alice//nb1/", "empty segment"),
        ("/notebook/alice/nb1//x", "empty segment"),
        ("/notebook/Alice/nb1/", "DNS-1123"),
        ("/notebook/alice/nb_1/", "DNS-1123"),
        ("/notebook/alice/", "/notebook/<namespace>/<name>/"),
        ("/notebook/alice/nb1/a%zz", "percent-encoded"),
        ("/notebook/alice/nb1/%25252525252e", "too many times"),
    ],
)
def test_unsafe_paths_are_refused_with_a_reason(path: str, reason: str) -> None:
    with pytest.raises(InvalidPath) as refused:
        parse(path)
    assert reason in refused.value.message
