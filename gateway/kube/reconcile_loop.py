"""The loop every reconciler of the gateway runs: a pass at once, then again when a watch wakes it or every
interval, and sooner (a jittered backoff up to the interval) after a pass that failed or could not finish.

Used by `profiles.Provisioner` (a Profile's namespace, bindings, quota) and `profile_access.ProfileAccess`
(the network and Istio policies in every Profile namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from ..backoff import Backoff
from ..errors import KubernetesError
from .reflector import Reflector

log = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 30.0
RETRY_MIN_S = 1.0  # after a failed pass, retry this soon (jittered), then ever later, up to the interval


class NotYet(Exception):
    """A pass that could not finish for a reason that is no failure (a namespace still being made): retried as
    soon as a failed pass, logged without alarm. Its text says what the pass waits for."""


async def reconcile_forever(
    what: str,
    pass_once: Callable[[], Awaitable[object]],
    wake: asyncio.Event,
    watches: Callable[[], Sequence[Reflector] | None],
    interval_s: float = RECONCILE_INTERVAL_S,
) -> None:
    """Run `pass_once` until cancelled, as the module says. `watches()` names the watches that wake the loop
    (each sets `wake`); asked before and after each pass until it names them (a reconciler may learn only from
    its first pass which kinds the API serves), they run alongside and are stopped with the loop."""
    running: asyncio.Future[list[None]] | None = None
    backoff = Backoff(min(RETRY_MIN_S, interval_s), interval_s)

    def start_watches() -> None:
        nonlocal running
        if running is None and (chosen := watches()) is not None:
            running = asyncio.gather(*(watch.run() for watch in chosen))

    try:
        while True:
            start_watches()
            wake.clear()
            try:
                await pass_once()
                wait_s = interval_s
                backoff.reset()
            except NotYet as exc:
                wait_s = backoff.next()
                log.info("%s: waiting for %s; again in %.1fs", what, exc, wait_s)
            except KubernetesError as exc:
                wait_s = backoff.next()
                log.warning("%s failed (%s); retrying in %.1fs", what, exc.description, wait_s)
            start_watches()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that lands as the wait ends
            # (a watch woke us), and this loop would then outlive its shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await wake.wait()
    finally:
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
