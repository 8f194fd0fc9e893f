"""Shared fixtures: small models made in code with fixed seeds (nothing downloaded)."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.registry import RegistryServer, registry_binary
from tests.support.s3 import S3Server, moto_python
from tests.support.sandbox import (  # noqa: F401 (session fixtures shared by every tier)
    kube_api,
    namespace,
    node_pools,
    sandbox_cluster,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ONNX = ROOT / "examples" / "models" / "tiny_cnn.onnx"
EXAMPLE_PT2 = ROOT / "examples" / "models" / "tiny_cnn.pt2"


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, `kill`) ends the run like Ctrl-C does, so fixtures tear down
    and every process the tests started (sandbox, registries, servers) is stopped; left to
    the default action, SIGTERM ends Python without running teardown or atexit."""
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``runs_last`` (the RBAC audit) go after every other test."""
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)


def make_mlp_onnx(path: Path, *, batch: int | str = 1, features: int = 16, hidden: int = 8,
                  seed: int = 0, input_name: str = "x") -> Path:
    """A two-layer MLP (MatMul+Add+Relu, MatMul) as an ONNX file; ``batch`` may be symbolic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((features, hidden)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 4)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", [input_name, "w1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]),
             helper.make_node("MatMul", ["h2", "w2"], ["y"])]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> Path:
    return make_mlp_onnx(tmp_path / "mlp.onnx")


@pytest.fixture
def example_onnx(tmp_path: Path) -> Path:
    dest = tmp_path / "tiny_cnn.onnx"
    shutil.copyfile(EXAMPLE_ONNX, dest)
    return dest


@pytest.fixture(scope="session")
def s3_store() -> Iterator[S3Server]:
    """One real S3-compatible server (moto) checking SigV4 signatures, for the session."""
    if moto_python() is None:
        pytest.skip("no python with moto[server] (scripts/install.sh installs one)")
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def registry() -> Iterator[RegistryServer]:
    """One real docker-registry for the whole session (filesystem storage in a temp dir)."""
    if registry_binary() is None:
        pytest.skip("docker-registry is not installed (Debian package docker-registry)")
    with RegistryServer() as server:
        yield server
