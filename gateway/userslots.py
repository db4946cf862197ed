"""Per-user caps on what the gateway holds open for a user: notebook requests in flight, WebSockets.

Without them one user's 256 WebSockets took every pooled connection to a notebook server and other
users' requests to it timed out. The count is per replica (Redis is not asked on every request);
with N replicas a user may hold up to N times the limit, each replica still protected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .errors import TooManyConnections


class UserSlots:
    """At most `limit` holds at once for each user; one more is refused with a 429."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what  # e.g. "WebSockets", for the message the user sees
        self._held: dict[str, int] = {}

    def held(self, user: str) -> int:
        return self._held.get(user, 0)

    @contextlib.contextmanager
    def hold(self, user: str) -> Iterator[None]:
        count = self._held.get(user, 0)
        if count >= self.limit:
            raise TooManyConnections(
                f"You already have {count} {self.what} open through the gateway, the most allowed "
                f"({self.limit}); close some and try again.",
                retry_after_s=5,  # connections end all the time: soon, but not at once
            )
        self._held[user] = count + 1
        try:
            yield
        finally:
            left = self._held[user] - 1
            if left:
                self._held[user] = left
            else:
                del self._held[user]  # users come and go: keep no entry for those with nothing open
