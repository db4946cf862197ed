"""Authorization: one decision per request on (identity, namespace, notebook, action).

This is the seam that Casbin policies plug into. Until they do, `OpenAuthorizer` allows every
request, which is only acceptable in `dev` mode bound to loopback (the CLI says so at start).
"""

from __future__ import annotations

import logging
import re
from typing import Literal, Protocol

from .identity import Identity

log = logging.getLogger(__name__)

# Proxied HTTP and WebSocket traffic is `connect` (it runs code); API reads are `view`.
# `manage` is changing who has which role (namespace admins, in their namespace; cluster-admins
# anywhere); `audit` is reading the audit log (namespace "*": auditors and cluster-admins).
Action = Literal["view", "connect", "create", "stop", "start", "delete", "manage", "audit"]


class Authorizer(Protocol):
    """Decides whether `identity` may do `action` in `namespace` (on `notebook`, if one is named).

    `require()` returns when allowed and raises `errors.Forbidden` with a short reason otherwise.
    It is synchronous: decisions come from memory, never from I/O on the request path.
    """

    def require(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> None: ...

    def namespaces(self, identity: Identity) -> dict[str, str]:
        """The namespaces where the user or one of their groups has a role, with the strongest role."""
        ...


class OpenAuthorizer:
    """Allows everything, to every signed-in user. A placeholder until Casbin policies land."""

    def require(self, identity: Identity, namespace: str, action: Action, notebook: str | None = None) -> None:
        log.debug("open authorizer: %s may %s in %s/%s", identity.subject, action, namespace, notebook or "*")

    def namespaces(self, identity: Identity) -> dict[str, str]:
        # Until policies land: each user may use the namespace named after them.
        return {personal_namespace(identity.subject): "admin"}


def personal_namespace(subject: str) -> str:
    """A DNS-1123 label for a user's own namespace: `Alice.Smith@example.com` -> `alice-smith`."""
    local = subject.split("@", 1)[0].lower()
    label = re.sub(r"[^a-z0-9]+", "-", local).strip("-")[:63].strip("-")
    return label or "user"
