"""The session cookie is signed: a value the gateway did not sign is never looked up, even when it names a live
session (a session id read from a log or a shared screen is not enough on its own)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from gateway.cookies import SESSION_COOKIE, CookieSigner

from .conftest import session_headers

Factory = Callable[..., Any]


def test_a_signed_value_comes_back_and_an_altered_one_does_not() -> None:
    signer = CookieSigner("s" * 32)
    signed = signer.sign("session-id")
    assert signer.unsign(signed) == "session-id"
    assert signer.unsign(signed[:-1] + ("A" if signed[-1] != "A" else "B")) is None
    assert signer.unsign("session-id.") is None
    assert CookieSigner("t" * 32).unsign(signed) is None  # another install's key
    assert signer.unsign(None) is None and signer.unsign("no-mac") is None


async def test_a_live_session_id_with_a_forged_signature_is_refused(
    gateway_factory: Factory, routes_file: Callable[[dict[tuple[str, str], str]], Path]
) -> None:
    client = await gateway_factory(user="alice@example.com", routes_file=routes_file({}))
    headers = session_headers(client)
    session_id = headers["Cookie"].removeprefix(f"{SESSION_COOKIE}=").rpartition(".")[0]
    forged = {**headers, "Cookie": f"{SESSION_COOKIE}={session_id}.{'0' * 43}"}
    async with aiohttp.ClientSession() as http:  # no cookie jar: only the Cookie header given is sent
        async with http.get(client.make_url("/oauth2/userinfo"), headers=headers) as resp:
            assert resp.status == 200  # the genuine cookie works
        async with http.get(client.make_url("/oauth2/userinfo"), headers=forged) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "login_required"
