"""`neofleet serve` as a real process over loopback: OIP v2 JSON and binary, bad input,
limits, overload, dynamic batching, graceful shutdown, serving from a registry by digest."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from neofleet.bundle.oci import push_bundle
from neofleet.runtime import DLRModel
from tests.integration.conftest import SERVER_W, ServedModel
from tests.support.registry import RegistryServer

pytestmark = pytest.mark.integration

Serve = Callable[..., ServedModel]
X = [[0.5, -1.0, 2.0, 3.25]]


def infer_body(data: Any = X, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": data}],
            **extra}


def binary_request(x: np.ndarray, *, binary_output: bool = True) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4").tobytes()
    header = json.dumps({
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": binary_output}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


def binary_output(response: httpx.Response) -> tuple[dict[str, Any], np.ndarray]:
    length = int(response.headers["inference-header-content-length"])
    doc = json.loads(response.content[:length])
    (out,) = doc["outputs"]
    array = np.frombuffer(response.content[length:], "<f4").reshape(out["shape"])
    return doc, array


def assert_serving(server: ServedModel) -> None:
    response = server.client.post("/v2/models/matmul/infer", json=infer_body())
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"][0]["data"],
                               (np.array(X, np.float32) @ SERVER_W).ravel(), rtol=1e-6)


# ---------------------------------------------------------------------------- protocol


def test_health_metadata_and_json_inference(serve: Serve,
                                            server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["matmul"], "--revision", "r1", "--threads", "2")
    client = server.client
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json() == {"name": "neofleet", "version": "0.1.0",
                                        "extensions": ["binary_tensor_data"]}
    assert client.get("/v2/models/matmul").json() == {
        "name": "matmul", "versions": ["r1"], "platform": "neofleet_onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2]}]}
    assert client.get("/v2/models/matmul/versions/r1").status_code == 200
    assert client.get("/v2/models/matmul/ready").json() == {"name": "matmul", "ready": True}

    expected = DLRModel(server_bundles["matmul"], "cpu").run(np.array(X, np.float32))[0]
    for data in (X, X[0]):  # nested and flat
        response = client.post("/v2/models/matmul/infer", json=infer_body(data, id="req-7"))
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["model_name"] == "matmul" and doc["model_version"] == "r1"
        assert doc["id"] == "req-7"
        (out,) = doc["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("y", "FP32", [1, 2])
        np.testing.assert_array_equal(np.array(out["data"], np.float32), expected.ravel())
    versioned = client.post("/v2/models/matmul/versions/r1/infer", json=infer_body())
    assert versioned.status_code == 200
    assert server.metric("neofleet_inference_requests_total", status="ok") == 3


def test_binary_tensor_extension(serve: Serve, server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["matmul"])
    x = np.array(X, np.float32)
    expected = DLRModel(server_bundles["matmul"], "cpu").run(x)[0]
    body, headers = binary_request(x)
    response = server.client.post("/v2/models/matmul/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    doc, y = binary_output(response)
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    np.testing.assert_array_equal(y, expected)
    body, headers = binary_request(x, binary_output=False)  # binary in, JSON out
    response = server.client.post("/v2/models/matmul/infer", content=body, headers=headers)
    assert "inference-header-content-length" not in response.headers
    np.testing.assert_array_equal(np.array(response.json()["outputs"][0]["data"], np.float32),
                                  expected.ravel())


# ---------------------------------------------------------------------------- bad input

SHORT_BINARY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                        "parameters": {"binary_data_size": 16}}]}).encode()
BAD_REQUESTS: list[tuple[str, Any, dict[str, str], int, str]] = [
    ("not json", b"{oops", {}, 400, "not valid JSON"),
    ("json list", b"[1, 2, 3]", {}, 400, "must be a JSON object"),
    ("wrong name", {"inputs": [{"name": "z", "shape": [1, 4], "datatype": "FP32",
                                "data": [1, 2, 3, 4]}]}, {}, 400,
     r"unknown input 'z'; the model takes x (FP32 [1, 4])"),
    ("missing input", {"inputs": []}, {}, 400, 'needs "inputs"'),
    ("shape", {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                           "data": list(range(8))}]}, {}, 400,
     "shape [2, 4] given, the model expects x (FP32 [1, 4])"),
    ("datatype", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64",
                              "data": [1, 2, 3, 4]}]}, {}, 400,
     "datatype 'INT64' given, the model expects FP32"),
    ("data length", infer_body([1, 2, 3]), {}, 400, "data has 3 elements, shape [1, 4] needs 4"),
    ("strings", infer_body(["a", "b", "c", "d"]), {}, 400, "FP32 data must be numbers"),
    ("binary size", SHORT_BINARY + b"\0" * 8,
     {"Inference-Header-Content-Length": str(len(SHORT_BINARY))}, 400,
     "runs past the end of the body"),
    ("header length", b'{"inputs":[]}', {"Inference-Header-Content-Length": "999"}, 400,
     "does not fit the body"),
    ("unknown output", infer_body(outputs=[{"name": "nope"}]), {}, 400,
     "unknown output 'nope'"),
]


def test_every_bad_request_gets_a_4xx_and_the_server_keeps_serving(
        serve: Serve, server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["matmul"])
    for case, body, headers, status, message in BAD_REQUESTS:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = server.client.post("/v2/models/matmul/infer", content=content,
                                      headers={"Content-Type": "application/json", **headers})
        assert response.status_code == status, (case, response.text)
        assert message in response.json()["error"], (case, response.text)
        assert_serving(server)
    assert server.metric("neofleet_inference_requests_total", status="client_error") == \
        len(BAD_REQUESTS)
    assert server.metric("neofleet_inference_errors_total", reason="InvalidInput") == 6
    assert server.metric("neofleet_inference_errors_total", reason="InvalidRequest") == 5
    assert server.process.poll() is None


def test_unknown_model_version_path_and_method(serve: Serve,
                                               server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["matmul"], "--name", "mm")
    client = server.client
    cases = [("POST", "/v2/models/other/infer", 404, "model 'other' is not served here"),
             ("POST", "/v2/models/mm/versions/9/infer", 404, "has no version '9'"),
             ("GET", "/v2/models/other", 404, "not served here"),
             ("GET", "/v2/models/other/ready", 404, "not served here"),
             ("GET", "/v3/nothing", 404, "Not Found"),
             ("GET", "/v2/models/mm/infer", 405, "Method Not Allowed")]
    for method, path, status, message in cases:
        response = client.request(method, path, json=infer_body())
        assert response.status_code == status, (path, response.text)
        assert message in response.json()["error"]
    assert client.post("/v2/models/mm/infer", json=infer_body()).status_code == 200
    assert server.metric("neofleet_inference_errors_total", reason="ModelNotFound") == 2


def test_bodies_over_the_limit_get_413(serve: Serve, server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["matmul"], "--max-body-bytes", "1024")
    big = json.dumps(infer_body(id="x" * 3000)).encode()
    response = server.client.post("/v2/models/matmul/infer", content=big,
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "over the limit of 1024 bytes" in response.json()["error"]

    def chunks() -> Any:  # no Content-Length: the limit applies while reading
        for _ in range(8):
            yield b" " * 512

    with httpx.Client(base_url=server.url, timeout=30) as fresh:
        chunked = fresh.post("/v2/models/matmul/infer", content=chunks())
    assert chunked.status_code == 413
    assert "over the limit" in chunked.json()["error"]
    assert server.metric("neofleet_inference_errors_total", reason="PayloadTooLarge") == 2
    with httpx.Client(base_url=server.url, timeout=30) as fresh:
        assert fresh.post("/v2/models/matmul/infer", json=infer_body()).status_code == 200


# ---------------------------------------------------------------------------- load


def _concurrently(server: ServedModel, count: int, body: dict[str, Any] | Callable[[int], Any],
                  ) -> list[httpx.Response]:
    responses: list[httpx.Response | None] = [None] * count
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                payload = body(index) if callable(body) else body
                name = "batch4" if callable(body) else "slow"
                responses[index] = client.post(f"/v2/models/{name}/infer", json=payload)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    assert all(r is not None for r in responses)
    return [r for r in responses if r is not None]


def test_overload_is_answered_503_not_queued(serve: Serve,
                                             server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["slow"], "--max-queue", "1", "--threads", "1")
    responses = _concurrently(server, 6, infer_body())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    assert set(codes) <= {200, 503}
    rejected = next(r for r in responses if r.status_code == 503)
    assert "--max-queue" in rejected.json()["error"] and rejected.headers["retry-after"] == "1"
    assert server.metric("neofleet_inference_requests_total", status="overloaded") == \
        codes.count(503)
    assert server.client.post("/v2/models/slow/infer", json=infer_body()).status_code == 200


def test_dynamic_batching_gives_each_request_its_rows(serve: Serve,
                                                      server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["batch4"], "--max-batch", "4", "--batch-timeout-ms", "200",
                   "--threads", "1")
    inputs = [np.random.default_rng(i).standard_normal((1, 4)).astype(np.float32)
              for i in range(12)]

    def body(index: int) -> dict[str, Any]:
        return {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                            "data": inputs[index].ravel().tolist()}]}

    responses = _concurrently(server, 12, body)
    for x, response in zip(inputs, responses, strict=True):
        assert response.status_code == 200, response.text
        out = response.json()["outputs"][0]
        assert out["shape"] == [1, 2]
        np.testing.assert_allclose(out["data"], (x @ SERVER_W).ravel(), rtol=1e-5, atol=1e-6)
    batches = server.metric("neofleet_inference_batch_size_count")
    singles = server.metric("neofleet_inference_batch_size_bucket", le="1.0")
    assert server.metric("neofleet_inference_batch_size_sum") == 12
    assert batches - singles >= 1, "no batch ran more than one request"

    two = np.arange(8, dtype=np.float32).reshape(2, 4)
    response = server.client.post("/v2/models/batch4/infer", json={"inputs": [
        {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": two.tolist()}]})
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], (two @ SERVER_W).ravel(),
                               rtol=1e-6)
    too_many = server.client.post("/v2/models/batch4/infer", json={"inputs": [
        {"name": "x", "shape": [5, 4], "datatype": "FP32", "data": [0.0] * 20}]})
    assert too_many.status_code == 400
    assert "FP32 [1..4, 4]" in too_many.json()["error"]
    assert server.client.get("/v2/models/batch4").json()["inputs"][0]["shape"] == [-1, 4]


@pytest.mark.parametrize(("bundle", "args", "message"), [
    ("batch4", ["--max-batch", "8"], "--max-batch 8 is larger than the bundle's batch size 4"),
    ("matmul", ["--batch-timeout-ms", "5"], "--batch-timeout-ms needs --max-batch"),
    ("matmul", ["--name", "no/slash"], "is not a valid name"),
])
def test_bad_serve_options_refuse_to_start(serve: Serve, server_bundles: dict[str, Path],
                                           bundle: str, args: list[str], message: str) -> None:
    server = serve(server_bundles[bundle], *args, ready=False)
    assert server.wait_exit() == 1
    last = server.log_text().strip().splitlines()[-1]
    assert last.startswith("neofleet: InvalidServerConfig: ") and message in last, last


def test_a_bundle_that_cannot_load_stops_the_server_with_its_reason(
        serve: Serve, tmp_path: Path) -> None:
    import platform

    from tests.integration.conftest import matmul_model
    from tests.support.bundles import make_bundle

    other = "x86_64" if platform.machine() in {"aarch64", "arm64"} else "aarch64"
    bundle = make_bundle(tmp_path / "other", artifact_bytes=matmul_model(), arch=other)
    server = serve(bundle.path, ready=False)
    assert server.wait_exit(timeout=60) == 1
    last = server.log_text().strip().splitlines()[-1]
    assert last.startswith(f"neofleet: IncompatibleBundle: bundle was built for target "
                           f"linux-{other}"), last


def test_sigterm_drains_requests_in_flight_and_exits_0(serve: Serve,
                                                       server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["slow"], "--threads", "2", "--drain-seconds", "60")
    holder: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: holder.update(
        responses=_concurrently(server, 2, infer_body())))
    thread.start()
    deadline = time.monotonic() + 30
    while server.metric("neofleet_inflight_requests") < 2:
        assert time.monotonic() < deadline, "the requests never got in flight"
        time.sleep(0.005)
    server.process.send_signal(signal.SIGTERM)
    thread.join(timeout=120)
    assert [r.status_code for r in holder["responses"]] == [200, 200]
    assert server.wait_exit() == 0
    assert "Shutting down" in server.log_text()


def _wait_not_ready(server: ServedModel) -> None:
    """Until /v2/health/ready answers 503 (the shutdown signal was handled)."""
    deadline = time.monotonic() + 30
    while server.client.get("/v2/health/ready").status_code != 503:
        assert time.monotonic() < deadline, "readiness never turned 503"
        time.sleep(0.01)


def test_shutdown_delay_serves_with_readiness_503_then_drains_and_exits_0(
        serve: Serve, server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["matmul"], "--shutdown-delay-seconds", "2")
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    _wait_not_ready(server)
    assert server.client.get("/v2/models/matmul/ready").status_code == 503
    with httpx.Client(base_url=server.url, timeout=60) as fresh:  # a new connection
        response = fresh.post("/v2/models/matmul/infer", json=infer_body())
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["outputs"][0]["data"],
                               (np.array(X, np.float32) @ SERVER_W).ravel(), rtol=1e-6)
    assert "Shutting down" not in server.log_text()  # answered before the drain began
    assert server.wait_exit(timeout=60) == 0
    assert time.monotonic() - signalled >= 2
    log = server.log_text()
    assert "readiness is 503, still serving for 2 s" in log and "Shutting down" in log


def test_a_second_signal_ends_the_shutdown_delay(serve: Serve,
                                                 server_bundles: dict[str, Path]) -> None:
    server = serve(server_bundles["matmul"], "--shutdown-delay-seconds", "600")
    server.process.send_signal(signal.SIGTERM)
    _wait_not_ready(server)
    assert_serving(server)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait_exit(timeout=60) == 0


# ---------------------------------------------------------------------------- oci


def test_serve_from_the_registry_by_digest(serve: Serve, server_bundles: dict[str, Path],
                                           registry: RegistryServer, tmp_path: Path) -> None:
    pushed = push_bundle(server_bundles["matmul"], f"oci://{registry.host}/serve/matmul:v1")
    cache = tmp_path / "bundles"
    server = serve(pushed.uri, "--cache-dir", str(cache), "--name", "matmul")
    assert_serving(server)
    assert server.metric("neofleet_model_info", bundle_digest=pushed.bundle_digest) == 1
    assert server.stop() == 0
    assert "from the registry)" in server.log_text()
    cached = cache / pushed.manifest_digest.replace(":", "-")
    record = cached.with_name(cached.name + ".bundle-digest")
    assert record.read_text().strip() == pushed.bundle_digest
    mtime = cached.stat().st_mtime_ns
    again = serve(pushed.uri, "--cache-dir", str(cache), "--name", "matmul")  # from the cache
    assert_serving(again)
    assert cached.stat().st_mtime_ns == mtime
    assert "from the cache)" in again.log_text()


def test_servers_sharing_a_cache_pull_a_bundle_once(
        serve: Serve, server_bundles: dict[str, Path], registry: RegistryServer,
        tmp_path: Path) -> None:
    """A cache shared by several servers (a PVC all of a pool's revisions mount): started
    together, exactly one downloads the bundle and the others wait for it and reuse it."""
    pushed = push_bundle(server_bundles["matmul"], f"oci://{registry.host}/serve/shared:v1")
    cache = tmp_path / "shared"
    servers = [serve(pushed.uri, "--cache-dir", str(cache), "--name", "matmul", ready=False)
               for _ in range(3)]
    for server in servers:
        assert server.wait_ready(), server.log_text()
        assert_serving(server)
    origins = sorted("registry" if "from the registry)" in s.log_text() else "cache"
                     for s in servers)
    assert origins == ["cache", "cache", "registry"], [s.log_text() for s in servers]


def test_a_wrong_digest_refuses_to_start(serve: Serve, server_bundles: dict[str, Path],
                                         registry: RegistryServer) -> None:
    pushed = push_bundle(server_bundles["matmul"], f"oci://{registry.host}/serve/wrong:v1")
    wrong = pushed.uri[:-8] + "00000000"
    server = serve(wrong, ready=False)
    assert server.wait_exit(timeout=120) == 1
    lines = server.log_text().strip().splitlines()
    assert lines[-1].startswith("neofleet: RegistryError: ") or \
        lines[-1].startswith("neofleet: ArtifactDigestError: "), lines
    assert "Uvicorn running" not in server.log_text()


# ---------------------------------------------------------------------------- tvm


@pytest.fixture(scope="module")
def tvm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from neofleet.compiler.pipeline import CompileRequest, compile_model
    from tests.conftest import EXAMPLE_ONNX

    result = compile_model(CompileRequest(
        model=EXAMPLE_ONNX, framework="onnx", inputs=[], targets=["native"],
        output=tmp_path_factory.mktemp("serve-tvm"), backend="tvm", tuning_db=None))
    bundle = result.targets[0].bundle
    assert bundle is not None, result.targets[0].error
    return bundle.path


def test_serves_a_tvm_bundle(serve: Serve, tvm_bundle: Path) -> None:
    server = serve(tvm_bundle, "--threads", "2")
    meta = server.client.get("/v2/models/tiny_cnn").json()
    assert meta["platform"] == "neofleet_tvm"
    (spec,) = meta["inputs"]
    x = np.random.default_rng(3).standard_normal(spec["shape"]).astype(np.float32)
    expected = DLRModel(tvm_bundle, "cpu").run({spec["name"]: x})[0]
    raw = x.tobytes()
    header = json.dumps({"inputs": [{"name": spec["name"], "shape": spec["shape"],
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    response = server.client.post("/v2/models/tiny_cnn/infer", content=header + raw,
                                  headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.text
    _, y = binary_output(response)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    as_json = server.client.post("/v2/models/tiny_cnn/infer", json={"inputs": [
        {"name": spec["name"], "shape": spec["shape"], "datatype": "FP32",
         "data": x.tolist()}]})
    np.testing.assert_allclose(as_json.json()["outputs"][0]["data"], expected.ravel(),
                               rtol=1e-5, atol=1e-6)
