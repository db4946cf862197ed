"""`WatchHealth`: where a component's watches of the Kubernetes API stand, for /readyz.

Its own module (no client import), so the protocols that return it need not load the Kubernetes library.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WatchHealth:
    """Where some watches stand, for /readyz. `synced`: every first list came back (until then the view
    is empty or partial). `error`: one of them cannot reach the API now (the last view keeps serving).
    `last_ok`: wall-clock time the API last answered the one that has gone longest without."""

    subject: str
    synced: bool
    error: str | None = None
    last_ok: float | None = None
