"""``TrafficDriver``: a sandbox stand-in for kube-proxy plus a steady client. The sandbox has
no kube-proxy (Services do not route), so this keeps its own endpoint list the way the
EndpointSlice controller would and sends Open Inference Protocol v2 requests to it.

    with TrafficDriver(api, ns, "neofleet.io/edgemodeldeployment=demo", "demo", body) as t:
        ...                        # scale, roll, delete pods
    assert not t.failures(), t.summary()

- **endpoints**: the pods matching the selector that are Running, Ready=True and not being
  deleted, at ``127.0.0.1:<host port>`` from the node agent's port annotation; kept
  current by list + watch (``PodWatch``), so a terminating pod leaves within one event;
- **requests**: ``POST /v2/models/{model}/infer`` with ``body``, round-robin over the
  endpoints from ``senders`` threads, ``pause_s`` between a thread's requests, one TCP
  connection per request (as kube-proxy balances connections), **no retries**;
- **records**: every attempt (``Attempt``), including those made while no endpoint
  existed (kind ``no-endpoints``).
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

from neofleet.sandbox.addons.podwatch import Pod, PodWatch, host_port, is_ready

REVISION_LABEL = "neofleet.io/revision"


class Endpoint(NamedTuple):
    pod: str
    revision: str | None
    port: int


@dataclass(frozen=True)
class Attempt:
    """One request. ``kind``: ``ok``, ``no-endpoints``, ``http-error`` (status not 200),
    ``exception`` (connect/read failed: ``detail`` has the text) or ``bad-body``."""

    t: float                    # seconds since the driver started
    at: float                   # wall clock, to line up with Events and pod logs
    pod: str | None
    revision: str | None        # the pod's revision label
    port: int | None
    kind: str
    status: int | None
    detail: str
    latency_s: float
    model_version: str | None   # what the server answered

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


class TrafficDriver:
    """Continuous OIP v2 traffic to the ready pods matching ``label_selector``."""

    def __init__(self, api_client: Any, namespace: str, label_selector: str, model: str,
                 body: dict[str, Any], *, port: int | str = 8080, senders: int = 2,
                 pause_s: float = 0.02, timeout_s: float = 10.0) -> None:
        self._watch = PodWatch(api_client, namespace, label_selector, self._on_pods)
        self._port, self._pause_s, self._timeout_s = port, pause_s, timeout_s
        self._path = f"/v2/models/{model}/infer"
        self._body = json.dumps(body).encode()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._results: list[Attempt] = []
        self._stopping = threading.Event()
        self._senders = [threading.Thread(target=self._send_forever, daemon=True,
                                          name=f"traffic-{i}") for i in range(senders)]
        self._started = time.monotonic()
        self.endpoint_log: list[tuple[float, tuple[str, ...]]] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._started = time.monotonic()
        self._watch.start()
        try:
            for sender in self._senders:
                sender.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop sending (requests in flight finish) and stop watching; idempotent."""
        self._stopping.set()
        for sender in self._senders:
            if sender.is_alive():
                sender.join(timeout=self._timeout_s + 5)
        self._watch.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------- results
    @property
    def results(self) -> list[Attempt]:
        with self._lock:
            return list(self._results)

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._endpoints

    def failures(self) -> list[Attempt]:
        return [r for r in self.results if not r.ok]

    def by_revision(self) -> dict[str, int]:
        """Successful answers by the ``model_version`` the server reported."""
        return dict(Counter(str(r.model_version) for r in self.results if r.ok))

    def by_pod(self) -> dict[str, int]:
        return dict(Counter(str(r.pod) for r in self.results if r.ok))

    def summary(self) -> dict[str, Any]:
        """Counts, the first failures and the endpoint history: for assertion messages."""
        results = self.results
        failed = [r for r in results if not r.ok]
        return {"attempts": len(results), "ok": len(results) - len(failed),
                "failures": len(failed), "failure_kinds": dict(Counter(r.kind for r in failed)),
                "first_failures": [asdict(r) for r in failed[:10]],
                "by_revision": self.by_revision(), "by_pod": self.by_pod(),
                "endpoint_log": self.endpoint_log[-30:], "watch_errors": self._watch.errors,
                "seconds": round(time.monotonic() - self._started, 1)}

    # ------------------------------------------------------------------ internals
    def _on_pods(self, pods: list[Pod]) -> None:
        endpoints = []
        for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
            port = host_port(pod, self._port) if is_ready(pod) else None
            if port is not None:
                labels = pod["metadata"].get("labels") or {}
                endpoints.append(Endpoint(pod["metadata"]["name"], labels.get(REVISION_LABEL),
                                          port))
        if tuple(endpoints) != self._endpoints:
            self._endpoints = tuple(endpoints)
            self.endpoint_log.append((round(time.monotonic() - self._started, 3),
                                      tuple(e.pod for e in endpoints)))

    def _send_forever(self) -> None:
        while not self._stopping.is_set():
            attempt = self._send_once()
            with self._lock:
                self._results.append(attempt)
            self._stopping.wait(self._pause_s)

    def _pick(self) -> Endpoint | None:
        endpoints = self._endpoints
        return endpoints[next(self._turn) % len(endpoints)] if endpoints else None

    def _send_once(self) -> Attempt:
        endpoint, at, began = self._pick(), time.time(), time.monotonic()
        status, version = None, None
        if endpoint is None:
            kind, detail = "no-endpoints", "no ready pod matched"
        else:
            try:
                status, payload = self._post(endpoint.port)
            except (OSError, http.client.HTTPException) as exc:
                kind, detail = "exception", f"{type(exc).__name__}: {exc}"
            else:
                kind, detail, version = _judge(status, payload)
        return Attempt(t=round(began - self._started, 4), at=at,
                       pod=endpoint.pod if endpoint else None,
                       revision=endpoint.revision if endpoint else None,
                       port=endpoint.port if endpoint else None, kind=kind, status=status,
                       detail=detail, latency_s=round(time.monotonic() - began, 5),
                       model_version=version)

    def _post(self, port: int) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=self._timeout_s)
        try:
            connection.request("POST", self._path, body=self._body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _judge(status: int, payload: bytes) -> tuple[str, str, str | None]:
    """(kind, detail, model_version) of an answered request."""
    if status != 200:
        return "http-error", f"HTTP {status}: {payload[:300]!r}", None
    try:
        doc = json.loads(payload)
    except ValueError:
        return "bad-body", f"not JSON: {payload[:300]!r}", None
    if not isinstance(doc, dict) or "outputs" not in doc:
        return "bad-body", f"no outputs: {payload[:300]!r}", None
    version = doc.get("model_version")
    return "ok", "", None if version is None else str(version)
