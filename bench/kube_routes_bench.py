"""Route latency of the kubernetes backend: from the moment the (fake) API server commits a new
Notebook, and so emits its ADDED watch event, until the gateway's route table holds its route.

    .venv/bin/python bench/kube_routes_bench.py                      # 200 notebooks, 1,000 already there
    .venv/bin/python bench/kube_routes_bench.py --notebooks 500 --existing 5000

The API server is tests/fakes/kube_api.py on loopback, reached through kubernetes_asyncio exactly as
in production (one watch per namespace scope, JSON lines). Target (issue 7): routable within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.backends.kubernetes import KubernetesBackend
from gateway.backends.notebook_watcher import NotebookWatcher
from gateway.kube.client import KubeClient
from tests.fakes.kube_api import FakeKubeAPI

IMAGE = "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0"


def notebook(name: str) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"name": name, "image": IMAGE}]}}},
    }


async def measure(count: int, existing: int) -> list[float]:
    api = FakeKubeAPI()
    await api.start()
    api.add_namespace("bench")
    for i in range(existing):
        api.create("notebooks", notebook(f"old-{i}"), "bench")
    routed: dict[str, float] = {}
    arrived = asyncio.Event()
    original = NotebookWatcher._notebook_changed

    def record(self: NotebookWatcher, event: object) -> None:
        original(self, event)  # type: ignore[arg-type]
        stamp = time.perf_counter()
        for key in self.routes:
            if key[1].startswith("new-") and key[1] not in routed:
                routed[key[1]] = stamp
                arrived.set()

    NotebookWatcher._notebook_changed = record  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        client = KubeClient(kubeconfig=api.write_kubeconfig(Path(tmp) / "kubeconfig"))
        await client.open()  # the backend takes the gateway's one client, opened before it and closed after
        backend = KubernetesBackend(client)
        started = time.perf_counter()
        await backend.open()
        print(f"first list of {existing} notebooks: {(time.perf_counter() - started) * 1000:.1f} ms")
        latencies = []
        try:
            for i in range(count):
                name = f"new-{i}"
                revision = int(api.create("notebooks", notebook(name), "bench")["metadata"]["resourceVersion"])
                while name not in routed:
                    arrived.clear()
                    await arrived.wait()
                latencies.append(routed[name] - api.committed_at[revision])
        finally:
            await backend.close()
            await client.close()
            await api.stop()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=200)
    parser.add_argument("--existing", type=int, default=1000)
    args = parser.parse_args()
    latencies = sorted(asyncio.run(measure(args.notebooks, args.existing)))
    ms = [latency * 1000 for latency in latencies]
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"ADDED -> routable over {len(ms)} notebooks: p50 {statistics.median(ms):.2f} ms, "
        f"p99 {p99:.2f} ms, max {ms[-1]:.2f} ms (target: 1000 ms)"
    )


if __name__ == "__main__":
    main()
