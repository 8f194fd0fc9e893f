"""Fixtures for integration tests that need real infrastructure."""

from __future__ import annotations

# ---------------------------------------------------------------------------- neofleet serve
# Real `neofleet serve` processes on free 127.0.0.1 ports (tests/integration/test_server*.py),
# and the small ONNX Runtime bundles they serve. Every process is stopped by PID.
import os
import signal
import subprocess
import sys
import time
from collections.abc import (
    Callable,
    Iterator,
)
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.registry import (
    free_port,
    )

SERVER_W = np.arange(8, dtype=np.float32).reshape(4, 2) / 10  # y = x @ SERVER_W
SLOW_MATMULS = 256  # ~0.3 s per request on one core: long enough to be caught in flight


def _onnx_bytes(nodes: list[Any], initializers: list[Any], x_shape: list[int],
                y_shape: list[int]) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def matmul_model(batch: int = 1) -> bytes:
    """x [batch, 4] @ SERVER_W -> y [batch, 2]."""
    from onnx import helper, numpy_helper

    return _onnx_bytes([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [numpy_helper.from_array(SERVER_W, "w")], [batch, 4], [batch, 2])


def slow_model(matmuls: int = SLOW_MATMULS) -> bytes:
    """x [1, 4] -> y [1, 2] through ``matmuls`` 512x512 matrix products (small I/O, slow)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = {"w1": rng.standard_normal((4, 512)) / 4,
               "w2": rng.standard_normal((512, 512)) / np.sqrt(512),
               "w3": rng.standard_normal((512, 2)) / np.sqrt(512)}
    inits = [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()]
    inits.append(numpy_helper.from_array(np.array([512, 4], np.int64), "shape"))
    nodes = [helper.make_node("Expand", ["x", "shape"], ["e"]),
             helper.make_node("MatMul", ["e", "w1"], ["h0"])]
    nodes += [helper.make_node("MatMul", [f"h{i}", "w2"], [f"h{i + 1}"]) for i in range(matmuls)]
    nodes += [helper.make_node("ReduceMean", [f"h{matmuls}"], ["m"], axes=[0], keepdims=1),
              helper.make_node("MatMul", ["m", "w3"], ["y"])]
    return _onnx_bytes(nodes, inits, [1, 4], [1, 2])


def _batch_bundle(dest: Path, batch: int) -> Path:
    """An ONNX Runtime bundle of matmul_model(batch): inputs and outputs carry the batch."""
    import tempfile

    from neofleet.bundle import write_bundle
    from neofleet.bundle.meta import ModelSignature, TensorSpec
    from tests.support.bundles import make_meta

    signature = ModelSignature(inputs=[TensorSpec(name="x", shape=[batch, 4], dtype="float32")],
                               outputs=[TensorSpec(name="y", shape=[batch, 2], dtype="float32")])
    meta = make_meta().model_copy(update={"model": signature})
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "compiled.onnx"
        artifact.write_bytes(matmul_model(batch))
        return write_bundle(dest, files={"compiled.onnx": artifact}, artifact="compiled.onnx",
                            backend="onnxruntime", meta=meta, graph={"nodes": 1}).path


@pytest.fixture(scope="session")
def server_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small ONNX Runtime bundles: "matmul" (x [1,4] -> y [1,2]), "slow" (same signature,
    ~0.3 s), "batch4" (x [4,4] -> y [4,2])."""
    from tests.support.bundles import make_bundle

    root = tmp_path_factory.mktemp("server-bundles")
    return {
        "matmul": make_bundle(root / "matmul", artifact_bytes=matmul_model()).path,
        "slow": make_bundle(root / "slow", artifact_bytes=slow_model()).path,
        "batch4": _batch_bundle(root / "batch4", 4),
    }


class ServedModel:
    """One ``neofleet serve`` process on a free 127.0.0.1 port."""

    def __init__(self, source: str, args: list[str], log_path: Path,
                 env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_path = log_path
        command = [sys.executable, "-m", "neofleet.cli", "serve", source, "--host",
                   "127.0.0.1", "--port", str(self.port), *args]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120.0) -> bool:
        """True once /v2/health/ready is 200; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if self.client.get("/v2/health/ready").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log_text()}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.client.get("/metrics").text
        return sum(s.value for family in text_string_to_metric_families(text)
                   for s in family.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM by PID, SIGKILL if it lingers; the exit code."""
        self.client.close()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return int(self.process.returncode)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServedModel]]:
    """``serve(source, *args, ready=True)`` starts ``neofleet serve`` (and waits until it is
    ready unless ``ready=False``); every server is stopped by PID at teardown."""
    started: list[ServedModel] = []
    env = {**os.environ, "NEOFLEET_CACHE": str(tmp_path / "cache")}

    def start(source: str | Path, *args: str, ready: bool = True) -> ServedModel:
        for attempt in range(3):  # another process may take the free port in between
            log_path = tmp_path / f"serve-{len(started)}-{attempt}.log"
            server = ServedModel(str(source), list(args), log_path, env)
            started.append(server)
            if not ready:
                return server
            if server.wait_ready():
                return server
            if "address already in use" not in server.log_text():
                raise RuntimeError(f"neofleet serve exited {server.process.returncode}:\n"
                                   f"{server.log_text()}")
        raise RuntimeError("no free port for neofleet serve after 3 attempts")

    yield start
    for server in started:
        server.stop()
