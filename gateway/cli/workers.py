"""`GATEWAY_WORKERS=N` (N > 1): `serve` as N worker processes listening on one port with SO_REUSEPORT, so that one
pod (or machine) uses N cores; the kernel spreads new connections over the workers.

Each worker is a whole gateway (its own event loop, connection pools, session cache, policy watcher, backend
watch); what they share goes through Redis as between replicas: sessions (a sign-out on one is seen by the
others through the session cache's channel), sign-in state, failed sign-in counters, the audit stream. What
must stay one per process writer gets one per worker: each worker writes its own audit hash chain, in
`<GATEWAY_AUDIT_DIR>/worker-<i>` (the directory is locked by its writer), exactly as replicas each have their
own. Background loops (policy reload, Kubernetes watches, refusal summaries, audit shipping to Redis) run in
every worker, each for itself; none of them needs to run only once, which is why this is allowed only with
Redis sessions and a backend that runs nothing itself (not `local`, which spawns the Jupyter servers).

The parent process only supervises: SIGTERM or SIGINT is passed on to every worker (each drains as `serve`
does); if one worker exits, the others are stopped and the parent exits with its status, so that the pod
restarts whole rather than run short of a worker unnoticed.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import signal
import sys
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Protocol

from .. import config

log = logging.getLogger(__name__)


def problems(settings: config.Settings, *, dev: bool) -> list[str]:
    if settings.workers == 1:
        return []
    found = []
    if dev or settings.backend == "local":
        found.append(f"{config.ENV_PREFIX}WORKERS: the local backend runs Jupyter servers in one process only; use 1")
    if (settings.session_store or ("memory" if settings.dev_provider else "redis")) != "redis":
        found.append(f"{config.ENV_PREFIX}WORKERS: workers share sessions through Redis; set GATEWAY_SESSION_STORE")
    return found


def worker_settings(settings: config.Settings, index: int) -> config.Settings:
    return settings.model_copy(update={"audit_dir": settings.audit_dir / f"worker-{index}"})


class Run(Protocol):
    """`cli.main.run`, handed in (pickled by name for the spawned worker) rather than imported back from here."""

    def __call__(self, settings: config.Settings, *, dev: bool, worker: int | None = None) -> int: ...


def _worker(run: Run, settings: config.Settings, index: int) -> None:
    sys.exit(run(worker_settings(settings, index), dev=False, worker=index))


def supervise(settings: config.Settings, run: Run) -> int:
    """Start the workers and wait; the first to exit ends the rest. Returns that worker's exit status."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no loop or lock inherited
    workers: list[BaseProcess] = [
        context.Process(target=_worker, args=(run, settings, index), name=f"gateway-worker-{index}", daemon=False)
        for index in range(settings.workers)
    ]
    stopping = False  # told to (a signal), as opposed to a worker exiting on its own

    def told_to_stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all()

    def stop_all() -> None:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                worker.terminate()  # SIGTERM: each drains its requests within GATEWAY_SHUTDOWN_GRACE_S

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, told_to_stop)
    for worker in workers:
        worker.start()
    log.info("serving with %d worker processes (pids %s)", len(workers), ", ".join(str(w.pid) for w in workers))
    sentinels = {worker.sentinel: worker for worker in workers}
    first = sentinels[multiprocessing.connection.wait(list(sentinels))[0]]  # type: ignore[index]
    first.join()
    if not stopping:
        log.error("worker %s exited with %s; stopping the others", first.name, first.exitcode)
        stop_all()
    for worker in workers:
        worker.join(timeout=settings.shutdown_grace_s + 10)
        if worker.is_alive():
            worker.kill()
            worker.join()
    return 0 if stopping else (first.exitcode or 1)
