"""KubeController: the little of Kubeflow's notebook controller that the gateway's tests need.

It writes Notebook status through the fake API server's status subresource (so the CRD schema
checks every status it writes), emits Warning events about notebooks as the real controller
re-emits its Pods' events, creates each notebook's Service, and can point a notebook's route at
a real local server instead of `<name>.<ns>.svc.<domain>` (through the backend's route resolver).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from yarl import URL

from gateway.backends.notebook_watcher import RouteResolver
from gateway.kube.kubeflow_names import STOP_ANNOTATION
from tests.fakes.kube_api import FakeKubeAPI, Obj


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeController:
    def __init__(self, api: FakeKubeAPI) -> None:
        self.api = api
        self.upstreams: dict[tuple[str, str], URL] = {}

    def resolver(self, fallback: RouteResolver) -> RouteResolver:
        """Routes to the servers `serve()` named, and to `fallback`'s answer for every other notebook."""

        def resolve(namespace: str, name: str) -> URL:
            return self.upstreams.get((namespace, name)) or fallback(namespace, name)

        return resolve

    def serve(self, namespace: str, name: str, url: str) -> None:
        """The notebook's pod is `url` (a real local server): route there and report it ready."""
        self.upstreams[namespace, name] = URL(url)
        self.ensure_service(namespace, name)
        self.mark_ready(namespace, name)

    def reconcile(self, namespace: str, name: str) -> None:
        """What the controller does after a change: scale to zero when stopped, run again when started."""
        notebook = self.api.get("notebooks", namespace, name)
        assert notebook is not None, f"no notebook {namespace}/{name}"
        if STOP_ANNOTATION in notebook["metadata"].get("annotations", {}):
            self.mark_stopped(namespace, name)
        else:
            self.mark_ready(namespace, name)

    def ensure_service(self, namespace: str, name: str) -> Obj:
        existing = self.api.get("services", namespace, name)
        if existing is not None:
            return existing
        notebook = self.api.get("notebooks", namespace, name) or {"metadata": {}}
        owner = {"apiVersion": "kubeflow.org/v1", "kind": "Notebook", "name": name, "controller": True}
        owner |= {"blockOwnerDeletion": True, "uid": notebook["metadata"].get("uid", "")}
        service = {
            "metadata": {"name": name, "namespace": namespace, "ownerReferences": [owner]},
            "spec": {
                "type": "ClusterIP",
                "selector": {"statefulset": name},
                "ports": [{"name": f"http-{name}", "port": 80, "targetPort": 8888, "protocol": "TCP"}],
            },
        }
        return self.api.create("services", service, namespace)

    def mark_ready(self, namespace: str, name: str) -> Obj:
        condition = {"type": "Ready", "status": "True", "lastProbeTime": _now(), "lastTransitionTime": _now()}
        running = {"running": {"startedAt": _now()}}
        return self._status(namespace, name, {"readyReplicas": 1, "containerState": running, "conditions": [condition]})

    def mark_stopped(self, namespace: str, name: str) -> Obj:
        return self._status(namespace, name, {"readyReplicas": 0, "containerState": {}, "conditions": []})

    def mark_waiting(self, namespace: str, name: str, reason: str, message: str = "") -> Obj:
        waiting = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        return self._status(namespace, name, {"readyReplicas": 0, "containerState": waiting, "conditions": []})

    def mark_condition(self, namespace: str, name: str, reason: str, message: str) -> Obj:
        condition = {"type": "PodScheduled", "status": "False", "reason": reason, "message": message}
        return self._status(namespace, name, {"readyReplicas": 0, "containerState": {}, "conditions": [condition]})

    def warn(self, namespace: str, name: str, reason: str, message: str, *, at: str | None = None) -> Obj:
        """A Warning event about the notebook, as the controller re-emits one from its Pod."""
        notebook = self.api.get("notebooks", namespace, name)
        uid = notebook["metadata"]["uid"] if notebook else ""
        event = {
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {"kind": "Notebook", "apiVersion": "kubeflow.org/v1", "name": name, "uid": uid},
            "type": "Warning",
            "reason": reason,
            "message": message,
            "firstTimestamp": at or _now(),
            "lastTimestamp": at or _now(),
            "count": 1,
            "source": {"component": "notebook-controller"},
        }
        return self.api.create("events", event, namespace)

    def _status(self, namespace: str, name: str, status: Obj) -> Obj:
        return self.api.replace_status("notebooks", namespace, name, status)  # as the controller's Update
