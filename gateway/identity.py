"""Who is making a request: the one value every layer (auth, authz, proxy, audit) shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    """A signed-in user (or API client). `subject` is the normalised username the gateway uses."""

    subject: str
    email: str | None = None
    groups: tuple[str, ...] = ()
    # How the identity was established: "session" (browser cookie) or "bearer" (API token).
    method: str = "session"
