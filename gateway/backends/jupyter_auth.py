"""Runs inside each local Jupyter server, not in the gateway: lets in only requests the gateway sent.

`--ServerApp.identity_provider_class=gateway.backends.jupyter_auth.GatewayOnly` makes Jupyter
accept a request only with `Authorization: token <the token in NOTEBOOK_GATEWAY_UPSTREAM_TOKEN>`,
which the proxy adds. The token is not Jupyter's own (`IdentityProvider.token` stays empty), so
JupyterLab never writes it into the pages it serves: the browser never holds it, and a local
process or a DNS-rebinding page without it gets 403.
"""

from __future__ import annotations

import hmac
import os

from jupyter_server.auth.identity import IdentityProvider, User
from tornado import web

TOKEN_ENV = "NOTEBOOK_GATEWAY_UPSTREAM_TOKEN"


class GatewayOnly(IdentityProvider):
    """The signed-in user is whoever the gateway says, and only the gateway can say it."""

    def get_user(self, handler: web.RequestHandler) -> User | None:
        expected = os.environ.get(TOKEN_ENV, "")
        scheme, _, sent = handler.request.headers.get("Authorization", "").partition(" ")
        if not expected or scheme.lower() != "token" or not hmac.compare_digest(sent.strip(), expected):
            return None  # Jupyter answers 403 (API) or sends the browser to its login page
        return User(username="gateway")

    @property
    def login_available(self) -> bool:
        return False  # there is nothing to type in: the gateway is the only way in
