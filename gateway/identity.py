"""Who is making a request: the one value every layer (auth, authz, proxy, audit) shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    """A signed-in user (or API client). `subject` is the normalised username the gateway uses."""

    subject: str
    email: str | None = None
    groups: tuple[str, ...] = ()
    # How the identity was established: "session", "bearer", or "anonymous" while sign-in is off.
    method: str = "session"


# Used only while no sign-in is configured (dev mode before OIDC): requests carry this identity so
# every layer already sees one, and the audit log says plainly that nobody was signed in.
ANONYMOUS = Identity(subject="anonymous", method="anonymous")
