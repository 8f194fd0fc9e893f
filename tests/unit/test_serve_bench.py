"""The helpers of benchmarks/serve_bench.py: wrk result parsing, the request body, the output
check, /proc parsing and the table. No servers and no timings (the benchmark is a script);
one test drives a tiny loopback HTTP server with the real wrk Lua script when wrk is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SERVE_BENCH_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_bench.py"


@pytest.fixture(scope="module")
def sb() -> ModuleType:
    spec = importlib.util.spec_from_file_location("neofleet_serve_bench", SERVE_BENCH_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building
    spec.loader.exec_module(module)
    return module


def _wrk_line(sb: ModuleType, **overrides: object) -> str:
    doc = {"requests": 2000, "duration_us": 4_000_000, "p50_us": 1500, "p95_us": 2500,
           "p99_us": 4000, "max_us": 9000, "status": 0, "connect": 0, "read": 0, "write": 0,
           "timeout": 0, "first_error": ""}
    doc.update(overrides)
    return sb.WRK_MARK + json.dumps(doc)


def test_parse_wrk_output_reads_the_marked_line(sb: ModuleType) -> None:
    text = "Running 4s test @ http://127.0.0.1:1/x\n  Latency 1.5ms\n" + _wrk_line(sb) + "\n"
    stats = sb.parse_wrk_output(text)
    assert (stats.requests, stats.p50_ms, stats.p95_ms, stats.p99_ms) == (2000, 1.5, 2.5, 4.0)
    assert stats.errors == 0
    assert stats.throughput == pytest.approx(500.0)


def test_parse_wrk_output_counts_errors_and_excludes_them_from_throughput(
        sb: ModuleType) -> None:
    stats = sb.parse_wrk_output(_wrk_line(sb, status=400, timeout=3, read=1,
                                          first_error="503 overloaded"))
    assert (stats.status_errors, stats.transport_errors, stats.errors) == (400, 4, 404)
    assert stats.throughput == pytest.approx(400.0)
    assert stats.first_error == "503 overloaded"


def test_parse_wrk_output_without_a_result_line_is_an_error(sb: ModuleType) -> None:
    with pytest.raises(sb.BenchError, match="no result line"):
        sb.parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_script_embeds_the_body_path_headers_and_marker(sb: ModuleType) -> None:
    script = sb.lua_script(Path("/tmp/a b/request.json"),
                           {"Content-Type": "application/json", "X-N": "12"})
    assert 'io.open("/tmp/a b/request.json", "rb")' in script
    assert 'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["X-N"] = "12"' in script
    assert sb.WRK_MARK + '{"requests":%d' in script
    assert "@" not in script


def test_oip_request_is_exact_for_quantized_inputs(sb: ModuleType) -> None:
    x = sb.quantize_input(np.random.default_rng(0).standard_normal((1, 3, 4, 4)))
    body, headers = sb.oip_request("x", x)
    assert headers == {"Content-Type": "application/json"}
    tensor = json.loads(body)["inputs"][0]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("x", [1, 3, 4, 4], "FP32")
    decoded = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    assert np.array_equal(decoded, x)
    assert np.array_equal(x * 256, np.round(x * 256))


def test_oip_binary_request_is_a_json_header_then_the_raw_bytes(sb: ModuleType) -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 6) / 4
    body, headers = sb.oip_request("x", x, binary=True)
    head = int(headers["Inference-Header-Content-Length"])
    assert headers["Content-Type"] == "application/octet-stream"
    tensor = json.loads(body[:head])["inputs"][0]
    assert tensor == {"name": "x", "shape": [1, 6], "datatype": "FP32",
                      "parameters": {"binary_data_size": 24}}
    assert np.array_equal(np.frombuffer(body[head:], "<f4").reshape(1, 6), x)


def test_decode_and_compare_outputs(sb: ModuleType) -> None:
    want = np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 12)
    got = sb.decode_output({"outputs": [{"name": "y", "shape": [1, 12], "datatype": "FP32",
                                         "data": (want + 1e-6).reshape(-1).tolist()}]})
    assert sb.compare_outputs("s", got, want) == pytest.approx(1e-6, rel=0.2)
    with pytest.raises(sb.BenchError, match="refusing to report timings"):
        sb.compare_outputs("s", want + 0.01, want)
    with pytest.raises(sb.BenchError, match="shape"):
        sb.compare_outputs("s", want.reshape(12), want)


def test_proc_parsers(sb: ModuleType) -> None:
    status = "Name:\tpython\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nThreads:\t4\n"
    assert sb.parse_vmrss_kb(status) == 123456
    assert sb.parse_vmrss_kb("Name:\tkthreadd\n") is None
    stat = "42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 2 3"
    assert sb.parse_cpu_ticks(stat) == 325


def test_this_process_has_rss_and_cpu_time(sb: ModuleType) -> None:
    assert (sb.rss_mb(os.getpid()) or 0) > 1
    assert sb.cpu_seconds(os.getpid()) >= 0
    assert sb.process_tree(os.getpid())[0] == os.getpid()
    assert 0 < sb.free_port() < 65536


def test_table_summary_and_target_misses(sb: ModuleType) -> None:
    def row(server: str, conc: int, p50: float, requests: int, status: int = 0) -> object:
        stats = sb.WrkStats(requests=requests, duration_s=10.0, p50_ms=p50, p95_ms=p50 * 2,
                            p99_ms=p50 * 3, max_ms=p50 * 4, status_errors=status,
                            transport_errors=0, first_error="503 busy" if status else "")
        return sb.Row("mlp", server, conc, stats, 1.5, 0.01)

    report = sb.ModelReport(model="mlp", backend="onnxruntime", request="JSON data, 1 bytes",
                            bare_dlr_ms=0.1,
                            bare_ort_ms=0.1, rss_mb={"neofleet": 90.0, "kserve": 200.0},
                            max_abs_diff={"neofleet": 0.0, "kserve": 0.0})
    report.rows = [row("neofleet", 1, 0.5, 9000), row("kserve", 1, 1.5, 6000),
                   row("neofleet", 8, 5.0, 5000, status=7), row("kserve", 8, 9.0, 6000)]
    table = sb.format_table(report.rows)
    assert table.splitlines()[0].split()[:3] == ["model", "server", "conc"]
    assert len(table.splitlines()) == 6
    summary = "\n".join(sb.summary_lines(report))
    assert "overhead 0.400 ms" in summary
    assert "c=1 1.50x" in summary
    misses = "\n".join(sb.target_misses(report))
    assert "p50 overhead 0.400 ms" in misses
    assert "mlp c=8: neofleet throughput is 0.83x" in misses
    assert "ERRORS: mlp neofleet c=8: 7 status, 0 transport; first: 503 busy" in misses


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = json.loads(body)["inputs"][0]["name"] == "x" and self.path.endswith("/infer")
        reply = b'{"outputs": []}' if ok else b'{"error": "bad \\"request\\""}'
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.parametrize(("path", "errors"), [("/v2/models/m/infer", False),
                                              ("/v2/models/m/other", True)])
def test_real_wrk_with_the_lua_script(sb: ModuleType, tmp_path: Path, path: str,
                                      errors: bool) -> None:
    body = tmp_path / "request.json"
    content, headers = sb.oip_request("x", np.zeros((1, 4), np.float32))
    body.write_bytes(content)
    script = tmp_path / "post.lua"
    script.write_text(sb.lua_script(body, headers))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}{path}"
        proc = subprocess.run(sb.wrk_command(url, script, 2, 1), capture_output=True,
                              text=True, timeout=60, check=True)
    finally:
        server.shutdown()
        server.server_close()
    stats = sb.parse_wrk_output(proc.stdout)
    assert stats.requests > 0
    if errors:
        assert stats.status_errors == stats.requests
        assert stats.first_error.startswith("400 ")
    else:
        assert stats.errors == 0


def test_soak_summary(sb: ModuleType) -> None:
    stats = sb.WrkStats(requests=600, duration_s=600.0, p50_ms=80.0, p95_ms=100.0,
                        p99_ms=120.0, max_ms=200.0, status_errors=0, transport_errors=0)
    soak = sb.Soak(seconds=600, idle_before_mb=170.0, idle_after_mb=171.5,
                   loaded_mb=[(60.0, 176.0), (120.0, 174.0), (540.0, 176.5)], stats=stats,
                   server_cpus=1.9, others_cpus=0.01)
    lines = sb.soak_summary(soak)
    assert lines[0] == "  RSS idle: before 170.0 MB, after 171.5 MB, growth +1.5 MB"
    assert lines[1] == ("  RSS under load: first 176.0 MB (t=60 s), last 176.5 MB (t=540 s), "
                        "range 174.0-176.5 MB, growth +0.5 MB")
    assert "600 requests" in lines[2] and "0 errors;" in lines[2]
    soak.loaded_mb = []
    assert "no sample" in sb.soak_summary(soak)[1]
