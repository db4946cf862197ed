"""`/.well-known/notebook-gateway`: what `notebook-gateway login` needs to sign a person in for scripts.

The gateway's own OAuth client is confidential (its secret never leaves the server), so the CLI signs in
as a separate public client that the operator registers at the provider (`GATEWAY_CLI_CLIENT_ID`).
This document tells the CLI the issuer and that client id, so that a user needs only the gateway's URL;
the CLI then reads everything else from the issuer's own discovery document. Nothing in it is secret.
"""

from __future__ import annotations

from aiohttp import web

from .. import keys
from ..errors import NotFound

PATH = "/.well-known/notebook-gateway"
# Served without a session: the CLI reads it before anyone has signed in.
PUBLIC = frozenset({"cli_discovery"})
# Refresh tokens for a CLI that stays signed in: providers such as Dex and Keycloak issue them only for this.
OFFLINE_SCOPE = "offline_access"

routes = web.RouteTableDef()


@routes.get(PATH, name="cli_discovery")
async def cli_discovery(request: web.Request) -> web.Response:
    settings = request.app[keys.SETTINGS]
    if settings.cli_client_id is None or settings.oidc_issuer is None:
        raise NotFound("This gateway has no client for the command line (its operators set GATEWAY_CLI_CLIENT_ID).")
    scopes = [*settings.oidc_scopes, *([] if OFFLINE_SCOPE in settings.oidc_scopes else [OFFLINE_SCOPE])]
    return web.json_response(
        {
            "issuer": str(settings.oidc_issuer),
            "client_id": settings.cli_client_id,
            "scopes": scopes,
            "api": f"{settings.base_url}/api",
        },
        headers={"Cache-Control": "no-cache"},
    )
