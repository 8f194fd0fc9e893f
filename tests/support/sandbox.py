"""pytest fixtures on top of ``neofleet.sandbox``: the same code ``neofleet sandbox up``
runs, so what tests use is what a developer brings up by hand.

- ``sandbox_cluster`` (session): a cluster in a temporary folder, stopped at the end even
  when tests fail (and on interpreter exit, as a last resort);
- ``kube_api``: an admin ``ApiClient``; ``namespace``: a fresh namespace per test, deleted
  after it; ``node_pools``: the pools the cluster simulates.
"""

from __future__ import annotations

import atexit
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from neofleet.sandbox import cluster
from neofleet.sandbox.cluster import Sandbox
from neofleet.sandbox.pools import DEFAULT_POOLS, Pool


@pytest.fixture(scope="session")
def sandbox_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    folder = tmp_path_factory.mktemp("sandbox")
    atexit.register(cluster.down, folder)
    started = cluster.up(folder)
    try:
        yield started
    finally:
        cluster.down(folder)


@pytest.fixture(scope="session")
def node_pools(sandbox_cluster: Sandbox) -> tuple[Pool, ...]:
    """The pools the session cluster simulates (the defaults)."""
    return DEFAULT_POOLS


@pytest.fixture(scope="session")
def kube_api(sandbox_cluster: Sandbox) -> Any:
    from kubernetes import config

    return config.new_client_from_config(str(sandbox_cluster.kubeconfig))


@pytest.fixture
def namespace(kube_api: Any) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_until(lambda: bool(core.list_namespaced_service_account(name).items),
          f"the default ServiceAccount of {name}", 30)
    try:
        yield name
    finally:
        core.delete_namespace(name)


def wait_until(check: Callable[[], object], what: str, timeout_s: float,
               detail: Callable[[], str] | None = None) -> Any:
    """``check()``'s first truthy value; on timeout an error with ``detail()`` (a log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    more = f"\n{detail()}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{more}")



def pod_folder(pod: Any) -> Path:
    from neofleet.sandbox.agent.agent import FOLDER_ANNOTATION

    return Path(pod.metadata.annotations[FOLDER_ANNOTATION])
