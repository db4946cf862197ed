"""Authorization: one decision per request on (identity, namespace, notebook, action).

This is the seam that Casbin policies plug into. Until they do, `OpenAuthorizer` allows every
request, which is only acceptable in `dev` mode bound to loopback (the CLI says so at start).
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

from .identity import Identity

log = logging.getLogger(__name__)

# Proxied HTTP and WebSocket traffic is `connect` (it runs code); API reads are `view`.
Action = Literal["view", "connect", "create", "stop", "start", "delete"]


class Authorizer(Protocol):
    """Decides whether `identity` may do `action` in `namespace` (on `notebook`, if one is named).

    `require()` returns when allowed and raises `errors.Forbidden` with a short reason otherwise.
    It is synchronous: decisions come from memory, never from I/O on the request path.
    """

    def require(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> None: ...


class OpenAuthorizer:
    """Allows everything. Used while no policies are configured (dev mode only)."""

    def require(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> None:
        log.debug("open authorizer: %s may %s in %s/%s", identity.subject, action, namespace, notebook or "*")
