"""``PodWatch``: the pods matching a label selector, kept current by list + watch, the way
an informer keeps its cache. The shared base of the sandbox stand-ins
for kube-proxy (``traffic.py``) and for Prometheus' ``kubernetes_sd``
(``discovery.py``), which the sandbox cannot run.

    watch = PodWatch(api_client, "ns", "app=web", on_change=lambda pods: ...)
    watch.start()     # the first list happens here, before start() returns
    ...
    watch.stop()

Pods are the API's own JSON (camelCase dicts). ``on_change`` is called from the watch
thread with a snapshot after the first list and after every event. A watch that fails or
expires (410 Gone) is recorded in ``errors`` and replaced by a fresh list.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import urllib3

Pod = dict[str, Any]
OnChange = Callable[[list[Pod]], None]


def host_port(pod: Pod, port: int | str) -> int | None:
    """The sandbox host port of the pod's container port ``port`` (a number or a port
    name), from the node agent's annotation; None until the agent has written it."""
    from neofleet.sandbox.agent.agent import PORTS_ANNOTATION

    raw = (pod["metadata"].get("annotations") or {}).get(PORTS_ANNOTATION)
    number = _container_port(pod, port)
    if raw is None or number is None:
        return None
    mapped = json.loads(raw).get(str(number))
    return int(mapped) if mapped is not None else None


def _container_port(pod: Pod, port: int | str) -> int | None:
    for container in pod["spec"]["containers"]:
        for declared in container.get("ports") or []:
            if port in (declared.get("name"), declared["containerPort"]):
                return int(declared["containerPort"])
    return None


def is_ready(pod: Pod) -> bool:
    """What the EndpointSlice controller calls ready: Running, Ready=True, not deleting."""
    status = pod.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True"
                for c in status.get("conditions") or [])
    return (status.get("phase") == "Running" and ready
            and not pod["metadata"].get("deletionTimestamp"))


class PodWatch:
    """List, then watch, the pods of ``namespace`` matching ``label_selector``."""

    WATCH_SECONDS = 1   # server-side timeout of each watch call: the most stop() waits

    def __init__(self, api_client: Any, namespace: str, label_selector: str,
                 on_change: OnChange) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client)
        self._namespace, self._selector = namespace, label_selector
        self._on_change = on_change
        self._pods: dict[str, Pod] = {}
        self._lock = threading.Lock()
        self._version = ""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"pod-watch-{namespace}")
        self.errors: list[str] = []

    def start(self) -> None:
        """List once (errors propagate), then keep watching in the background."""
        self._relist()
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.WATCH_SECONDS + 10)

    def pods(self) -> list[Pod]:
        with self._lock:
            return list(self._pods.values())

    def _relist(self) -> None:
        response = self._core.list_namespaced_pod(
            self._namespace, label_selector=self._selector, _preload_content=False)
        doc = json.loads(response.data)
        with self._lock:
            self._pods = {pod["metadata"]["name"]: pod for pod in doc["items"]}
        self._version = doc["metadata"]["resourceVersion"]
        self._on_change(self.pods())

    def _run(self) -> None:
        from kubernetes.client.rest import ApiException

        stale = False
        while not self._stopping.is_set():
            try:
                if stale:
                    self._relist()
                    stale = False
                self._watch_once()
            except (ApiException, OSError, ValueError, KeyError,
                    urllib3.exceptions.HTTPError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                stale = True
                self._stopping.wait(0.2)

    def _watch_once(self) -> None:
        from kubernetes import watch

        stream = watch.Watch().stream(
            self._core.list_namespaced_pod, self._namespace, label_selector=self._selector,
            resource_version=self._version, timeout_seconds=self.WATCH_SECONDS,
            _request_timeout=self.WATCH_SECONDS + 10)
        for event in stream:
            pod = event["raw_object"]
            name = pod["metadata"]["name"]
            self._version = pod["metadata"]["resourceVersion"]
            with self._lock:
                if event["type"] == "DELETED":
                    self._pods.pop(name, None)
                else:
                    self._pods[name] = pod
            self._on_change(self.pods())
            if self._stopping.is_set():
                return
