"""``PodTargets``: a sandbox stand-in for Prometheus' ``kubernetes_sd_configs`` (role: pod),
which cannot reach the sandbox's pods (they are processes on 127.0.0.1 behind mapped
ports). It writes a Prometheus ``file_sd`` file instead:

    with PodTargets(api, ns, "neofleet.io/edgemodeldeployment=demo", tmp / "pods.json") as sd, \\
            PrometheusServer([], file_sd=[sd.path]) as prom:
        prom.wait_for(lambda: prom.query('up{pool="edge-arm64"}') or None, timeout=60)

One target group per Running pod matching the selector (terminating ones too, as
kubernetes_sd lists them until they are gone) whose host port is known:
``127.0.0.1:<host port of container port 8080>`` with labels ``namespace``, ``pod``,
``pool`` and ``revision`` (the last two from the pod's ``neofleet.io/*`` labels). The file
is written at start (``[]`` when nothing matches) and rewritten atomically (temporary file
+ rename in the same folder) on every change; kept current by list + watch in a
background thread. The name must end in ``.json`` for Prometheus to read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from neofleet.sandbox.addons.podwatch import Pod, PodWatch, host_port

POOL_LABEL, REVISION_LABEL = "neofleet.io/pool", "neofleet.io/revision"


class PodTargets:
    """Keep ``path`` a file_sd list of the matching Running pods."""

    def __init__(self, api_client: Any, namespace: str, label_selector: str, path: Path, *,
                 port: int | str = 8080) -> None:
        self.path = Path(path).resolve()   # handed to Prometheus, which has its own cwd
        self._namespace, self._port = namespace, port
        self._watch = PodWatch(api_client, namespace, label_selector, self._on_pods)
        self._groups: list[dict[str, Any]] | None = None
        self.writes = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write([])
        self._watch.start()

    def stop(self) -> None:
        self._watch.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def targets(self) -> list[dict[str, Any]]:
        """The target groups last written."""
        return list(self._groups or [])

    def _on_pods(self, pods: list[Pod]) -> None:
        groups = [group for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"]))
                  if (group := self._group(pod)) is not None]
        if groups != self._groups:
            self._write(groups)

    def _group(self, pod: Pod) -> dict[str, Any] | None:
        if (pod.get("status") or {}).get("phase") != "Running":
            return None
        port = host_port(pod, self._port)
        if port is None:
            return None
        labels = pod["metadata"].get("labels") or {}
        return {"targets": [f"127.0.0.1:{port}"],
                "labels": {"namespace": self._namespace, "pod": pod["metadata"]["name"],
                           "pool": labels.get(POOL_LABEL, ""),
                           "revision": labels.get(REVISION_LABEL, "")}}

    def _write(self, groups: list[dict[str, Any]]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(groups, indent=1))
        temporary.replace(self.path)
        self._groups = groups
        self.writes += 1
