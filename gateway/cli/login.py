"""`notebook-gateway login | token | logout`: a bearer token for scripts, from whichever provider the gateway uses.

`login` asks the gateway which provider and public client to use (`/.well-known/notebook-gateway`, see
web/cli_discovery.py), then signs the person in as that client: in a browser, with the authorization code
and PKCE coming back to a one-off loopback server (RFC 8252), or with `--device` by the device flow
(RFC 8628) when the provider offers it. The ID token it gets is the bearer token: the gateway checks it
like any other (signature, issuer, the CLI client as audience). `token` prints it, refreshing it first
when it expires within a minute, so `curl -H "Authorization: Bearer $(notebook-gateway token)"` always works.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hmac
import html
import os
import sys
import time
import webbrowser
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web

from ..auth.oidc import DeviceAuthorization, OIDCClient, PendingLogin, TokenSet
from ..errors import GatewayError, RefreshRejected, TokenRequestRefused
from . import token_store
from .token_store import StoredLogin, TokenStoreError

DISCOVERY_PATH = "/.well-known/notebook-gateway"
GATEWAY_ENV = "NOTEBOOK_GATEWAY_URL"
LOGIN_TIMEOUT_S = 300.0  # how long a sign-in may take before the loopback server gives up
REFRESH_MARGIN_S = 60.0  # refresh a token that expires sooner than this: a script's call must not race it
SLOW_DOWN_S = 5.0  # RFC 8628 §3.5: add this much to the polling interval when told to slow down
HTTP_TIMEOUT_S = 30.0


class LoginError(Exception):
    """Signing in or getting a token failed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class GatewayDiscovery:
    """What the gateway tells the CLI: the issuer and the public client to sign in as, and the scopes."""

    issuer: str
    client_id: str
    scopes: tuple[str, ...]


def add_gateway_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gateway",
        default=os.environ.get(GATEWAY_ENV),
        required=GATEWAY_ENV not in os.environ,
        help=f"the gateway's URL, e.g. https://notebooks.example.com (default: ${GATEWAY_ENV})",
    )


def add_arguments(commands: Any) -> None:
    """The `login`, `token` and `logout` sub-commands (`commands` is main's subparsers)."""
    login = commands.add_parser("login", help="sign in for scripts: stores a refreshable token for this gateway")
    add_gateway_argument(login)
    login.add_argument("--device", action="store_true", help="sign in on another device (RFC 8628 device flow)")
    login.add_argument("--no-browser", action="store_true", help="only print the address to open")
    add_gateway_argument(commands.add_parser("token", help="print a valid bearer token (refreshed when expired)"))
    add_gateway_argument(commands.add_parser("logout", help="forget the tokens stored for this gateway"))


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "login":
            stored = asyncio.run(login(args.gateway, device=args.device, open_browser=not args.no_browser))
            print(f"Signed in to {stored.gateway} as {stored.user}.", file=sys.stderr)
        elif args.command == "token":
            print(asyncio.run(current_token(args.gateway)))
        elif args.command == "logout":
            forgotten = token_store.forget(args.gateway)
            print("Signed out." if forgotten else "Was not signed in.", file=sys.stderr)
    except (LoginError, TokenStoreError, GatewayError) as exc:
        print(f"notebook-gateway: {exc}", file=sys.stderr)
        return 1
    return 0


@contextlib.asynccontextmanager
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as http:
        yield http


async def login(
    gateway: str,
    *,
    device: bool = False,
    open_browser: bool = True,
    announce: Callable[[str], None] | None = None,
    timeout_s: float = LOGIN_TIMEOUT_S,
) -> StoredLogin:
    """Sign in and store the tokens; `announce` is told what the person must open (default: stderr)."""
    tell = announce or (lambda text: print(text, file=sys.stderr, flush=True))
    async with client_session() as http:
        found = await discover(http, gateway)
        if device:
            stored = await sign_in_on_device(http, gateway, found, announce=tell, timeout_s=timeout_s)
        else:
            stored = await sign_in_with_browser(
                http, gateway, found, announce=tell, open_browser=open_browser, timeout_s=timeout_s
            )
    token_store.save(stored)
    return stored


async def discover(http: aiohttp.ClientSession, gateway: str) -> GatewayDiscovery:
    url = f"{token_store.normalise_gateway(gateway)}{DISCOVERY_PATH}"
    try:
        async with http.get(url, headers={"Accept": "application/json"}) as resp:
            data = await resp.json(content_type=None)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise LoginError(f"The gateway at {gateway} did not answer {DISCOVERY_PATH}: {type(exc).__name__}") from None
    if status != 200 or not isinstance(data, dict):
        message = data.get("message") if isinstance(data, dict) else None
        raise LoginError(f"The gateway at {gateway} cannot sign in command-line clients ({status}): {message}")
    issuer, client_id, scopes = data.get("issuer"), data.get("client_id"), data.get("scopes")
    if not isinstance(issuer, str) or not isinstance(client_id, str) or not isinstance(scopes, list):
        raise LoginError(f"The gateway's {DISCOVERY_PATH} lacks issuer, client_id or scopes.")
    return GatewayDiscovery(issuer, client_id, tuple(str(scope) for scope in scopes))


def oidc_client(http: aiohttp.ClientSession, found: GatewayDiscovery, redirect_uri: str = "") -> OIDCClient:
    return OIDCClient(
        http,
        issuer=found.issuer,
        client_id=found.client_id,
        client_secret=None,  # a public client: PKCE binds the code to this process
        redirect_uri=redirect_uri,
        scopes=found.scopes,
        timeout_s=HTTP_TIMEOUT_S,
    )


async def sign_in_with_browser(
    http: aiohttp.ClientSession,
    gateway: str,
    found: GatewayDiscovery,
    *,
    announce: Callable[[str], None],
    open_browser: bool,
    timeout_s: float,
) -> StoredLogin:
    """The authorization code flow with PKCE, the browser coming back to http://127.0.0.1:<port>/callback."""
    pending = PendingLogin.new()
    answer: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def callback(request: web.Request) -> web.Response:
        query = dict(request.query)
        # Only the browser this command sent out knows the state: anything else on loopback is refused.
        if not hmac.compare_digest(query.get("state", "").encode(), pending.state.encode()):
            return _page(400, "This is not the sign-in this command started.")
        if not answer.done():
            answer.set_result(query)
        if "error" in query:
            return _page(400, f"Signing in failed: {query.get('error_description') or query['error']}.")
        return _page(200, "You are signed in. You can close this tab and go back to the terminal.")

    app = web.Application()
    app.router.add_get("/callback", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()  # loopback only, a port nobody else chose
        port = runner.addresses[0][1]
        client = oidc_client(http, found, f"http://127.0.0.1:{port}/callback")
        url = await client.authorization_url(pending)
        announce(f"Open this address in a browser to sign in:\n  {url}")
        if open_browser:
            await asyncio.to_thread(webbrowser.open, url)
        try:
            query = await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            raise LoginError(
                f"Nobody signed in within {timeout_s:.0f} s; run `notebook-gateway login` again."
            ) from None
    finally:
        await runner.cleanup()
    if "error" in query:
        raise LoginError(
            f"The identity provider refused the sign-in: {query.get('error_description') or query['error']}"
        )
    if not query.get("code"):
        raise LoginError("The identity provider sent no authorization code.")
    tokens, claims = await client.exchange(query["code"], pending)
    return _stored(gateway, found, tokens, claims)


async def sign_in_on_device(
    http: aiohttp.ClientSession,
    gateway: str,
    found: GatewayDiscovery,
    *,
    announce: Callable[[str], None],
    timeout_s: float,
) -> StoredLogin:
    """The device flow: show a code and an address, poll the token endpoint until the person has signed in."""
    client = oidc_client(http, found)
    device = await client.device_authorization()
    announce(_device_instructions(device))
    deadline = min(device.expires_at, time.time() + timeout_s)
    interval = device.interval_s
    while True:
        await asyncio.sleep(interval)
        if time.time() > deadline:
            raise LoginError("Nobody entered the code in time; run `notebook-gateway login --device` again.")
        try:
            tokens, claims = await client.device_token(device)
        except TokenRequestRefused as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += SLOW_DOWN_S
                continue
            raise LoginError(f"Signing in failed: {exc.error}.") from None
        return _stored(gateway, found, tokens, claims)


def _device_instructions(device: DeviceAuthorization) -> str:
    lines = [f"To sign in, open {device.verification_uri} and enter the code {device.user_code}"]
    if device.verification_uri_complete:
        lines.append(f"(or open {device.verification_uri_complete})")
    return "\n".join(lines)


async def current_token(gateway: str, *, now: Callable[[], float] = time.time) -> str:
    """The stored ID token, refreshed (and stored again) when it expires within REFRESH_MARGIN_S."""
    stored = token_store.load(gateway)
    if stored.expires_at - REFRESH_MARGIN_S > now():
        return stored.id_token
    with _refresh_lock(gateway):  # two scripts at once: one refreshes, the other reads what it stored
        stored = token_store.load(gateway)
        if stored.expires_at - REFRESH_MARGIN_S > now():
            return stored.id_token
        if stored.refresh_token is None:
            raise LoginError("The token has expired and the provider gave no refresh token: run `login` again.")
        async with client_session() as http:
            client = oidc_client(http, GatewayDiscovery(stored.issuer, stored.client_id, ()))
            try:
                tokens, claims = await client.refresh(stored.refresh_token)
            except RefreshRejected:
                raise LoginError("Your sign-in has ended at the identity provider: run `login` again.") from None
        if tokens.id_token is None or claims is None:
            raise LoginError("The identity provider refreshed without a new ID token: run `login` again.")
        stored = replace(
            stored,
            id_token=tokens.id_token,
            expires_at=float(claims["exp"]),
            refresh_token=tokens.refresh_token or stored.refresh_token,  # rotated, or the same one kept
        )
        token_store.save(stored)
    return stored.id_token


@contextlib.contextmanager
def _refresh_lock(gateway: str) -> Iterator[None]:
    path = token_store.path_for(gateway).with_suffix(".lock")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _stored(gateway: str, found: GatewayDiscovery, tokens: TokenSet, claims: dict[str, Any]) -> StoredLogin:
    assert tokens.id_token is not None  # exchange() and device_token() refuse an answer without one
    user = claims.get("email") or claims.get("preferred_username") or claims.get("sub")
    return StoredLogin(
        gateway=token_store.normalise_gateway(gateway),
        issuer=found.issuer,
        client_id=found.client_id,
        user=str(user),
        id_token=tokens.id_token,
        expires_at=float(claims["exp"]),
        refresh_token=tokens.refresh_token,
    )


def _page(status: int, message: str) -> web.Response:
    body = "<!DOCTYPE html><html><head><meta charset='utf-8'><title>notebook-gateway login</title></head>"
    body += f"<body><p>{html.escape(message)}</p></body></html>"
    headers = {"Content-Security-Policy": "default-src 'none'", "Cache-Control": "no-store"}
    return web.Response(status=status, text=body, content_type="text/html", headers=headers)
