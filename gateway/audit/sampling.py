"""Refusals of anonymous requests, recorded as a flood rather than one event each.

Anyone can send a million unauthenticated requests; one `access.denied` event each would fill the
audit volume with nothing a reader needs. The first refusal of each client in a window is recorded
in full (a stray request stays visible); the rest are counted, and `access.denied_summary` says how
many there were, from how many clients, and which sent the most. At most `max_clients` full events
and one summary per window, whatever the traffic.
"""

from __future__ import annotations

from collections import Counter


class RefusalSampler:
    """Counts anonymous refusals per client in the current window; `drain()` ends the window."""

    def __init__(self, max_clients: int, top: int = 20) -> None:
        self.max_clients = max_clients
        self.top = top
        self._counts: Counter[str] = Counter()  # clients seen this window (at most max_clients keys)
        self._overflow = 0  # refusals from clients beyond max_clients
        self._recorded = 0

    def admit(self, client: str) -> bool:
        """Count one refusal from `client`; True when it should be recorded in full (its first in the window)."""
        if client in self._counts:
            self._counts[client] += 1
            return False
        if len(self._counts) >= self.max_clients:  # a flood from many addresses: counts only, bounded memory
            self._overflow += 1
            return False
        self._counts[client] = 1
        self._recorded += 1
        return True

    def drain(self) -> dict[str, object] | None:
        """The details of the window's summary event (None when every refusal was recorded in full), and
        a new window."""
        total = sum(self._counts.values()) + self._overflow
        summary: dict[str, object] | None = None
        if total > self._recorded:
            summary = {
                "refusals": total,
                "recorded_in_full": self._recorded,
                "counted_only": total - self._recorded,
                "clients": len(self._counts) + (1 if self._overflow else 0),
                "clients_not_tracked_refusals": self._overflow,
                "top_clients": dict(self._counts.most_common(self.top)),
            }
        self._counts, self._overflow, self._recorded = Counter(), 0, 0
        return summary
