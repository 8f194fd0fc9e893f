"""Serving benchmark: ``neofleet serve`` against KServe's model server, same model, same load.

    benchmarks/setup-kserve.sh                     # once: KServe + ONNX Runtime venv, wrk
    .venv/bin/python benchmarks/serve_bench.py [--models mlp,mobilenetv2] [--seconds 10]
        [--warmup 3] [--binary] [--work DIR] [--json-out PATH] [--quick]
    .venv/bin/python benchmarks/serve_bench.py --models mobilenetv2 --soak 600

For each model (``benchmarks/models.py``: the MLP at batch 1 and MobileNetV2 1x3x224x224,
fixed seeds) the script exports ONNX once, compiles it in this process with neofleet
(``backend="auto"``, target ``native``), and starts two servers on free loopback ports:

- ``neofleet serve BUNDLE --threads 2`` (this venv);
- KServe's ``ModelServer`` (``benchmarks/.venv-kserve``) with a small ``kserve.Model`` whose
  ``predict`` runs ONNX Runtime on the ORIGINAL ONNX with 2 intra-op threads.

One response from each server is checked against ONNX Runtime on the original model before
anything is timed (a mismatch stops the run). Both servers get the same Open Inference
Protocol v2 JSON body from the same load generator, ``wrk -t1 -c N`` (HTTP/1.1 keep-alive,
one connection per concurrent client) with a Lua script, after a warm-up; each (server,
concurrency) runs for ``--seconds``, servers interleaved per concurrency level 1, 2, 4, 8.
The table gives p50/p95/p99 latency, throughput, errors, and the CPUs used by the server and
by everything else; below it, the neofleet server's p50 overhead over a bare
``DLRModel.run`` on the same input (timed in this process) and each server's RSS at the end.
``--binary`` sends the input with the binary tensor extension instead of JSON data.
``--soak S`` drives only the neofleet server at concurrency 8 for S seconds and prints its
RSS idle before, every 60 s under load, and idle after. Every server started is stopped by
PID on the way out (also on Ctrl-C). See benchmarks/README.md for the columns and results.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
KSERVE_PYTHON = HERE / ".venv-kserve" / "bin" / "python"
THREADS = 2
INPUT_NAME = "x"  # the name models.export_onnx gives the input
CONCURRENCY = (1, 2, 4, 8)
QUICK_CONCURRENCY = (1, 4)
SOAK_CONCURRENCY = 8
SOAK_SAMPLE_S = 60
RTOL, ATOL = 1e-3, 1e-4
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
WRK_MARK = "SERVE_BENCH_JSON "
SERVERS = ("neofleet", "kserve")
TARGET_OVERHEAD_MS = 0.3


class BenchError(RuntimeError):
    """A precondition of the benchmark failed; the message says which."""


@dataclass(frozen=True)
class Settings:
    seconds: float = 10.0
    warmup_s: float = 3.0
    bare_s: float = 2.0
    concurrency: tuple[int, ...] = CONCURRENCY
    binary: bool = False


@dataclass
class WrkStats:
    """What one wrk run reports (latencies in ms)."""

    requests: int
    duration_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    status_errors: int
    transport_errors: int
    first_error: str = ""
    wrk_cpu_s: float = 0.0

    @property
    def errors(self) -> int:
        return self.status_errors + self.transport_errors

    @property
    def throughput(self) -> float:
        ok = self.requests - self.status_errors
        return ok / self.duration_s if self.duration_s > 0 else 0.0


@dataclass
class Row:
    model: str
    server: str
    concurrency: int
    stats: WrkStats
    server_cpus: float | None
    others_cpus: float | None


@dataclass
class ModelReport:
    model: str
    backend: str
    request: str
    rows: list[Row] = field(default_factory=list)
    bare_dlr_ms: float | None = None
    bare_ort_ms: float | None = None
    decode_ms: float | None = None
    rss_mb: dict[str, float | None] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)

    def p50(self, server: str, concurrency: int) -> float | None:
        for row in self.rows:
            if row.server == server and row.concurrency == concurrency:
                return row.stats.p50_ms
        return None


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,mobilenetv2",
                        help="comma-separated: mlp (batch 1), mobilenetv2")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="duration of each (server, concurrency) run [10]")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="warm-up per server and model, seconds [3]")
    parser.add_argument("--soak", type=float, metavar="SECONDS",
                        help="instead of the table: neofleet only, concurrency 8, RSS every 60 s")
    parser.add_argument("--work", type=Path, help="keep ONNX files, bundles and logs here")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--binary", action="store_true",
                        help="send the input with the binary tensor extension, not JSON data")
    parser.add_argument("--quick", action="store_true",
                        help="MLP only, concurrency 1 and 4, 2 s runs (smoke test)")
    parser.add_argument("--kserve-server", nargs=4, metavar=("ONNX", "PORT", "NAME", "THREADS"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def settings_for(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(seconds=2.0, warmup_s=1.0, bare_s=1.0, concurrency=QUICK_CONCURRENCY,
                        binary=args.binary)
    return Settings(seconds=args.seconds, warmup_s=args.warmup, binary=args.binary)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.kserve_server:
        return kserve_server_main(*args.kserve_server)
    names = ["mlp"] if args.quick else [n.strip() for n in args.models.split(",") if n.strip()]
    _stop_on_signals()
    from models import workdir  # lazily: models imports torch

    try:
        check_prerequisites()
        with workdir(args.work, "neofleet-serve-bench-") as work:
            if args.soak:
                soaks = [soak_model(name, work / name, args.soak, args.binary)
                         for name in names]
                _write_json(args.json_out, {"soak": soaks})
                return 0
            reports = [bench_model(name, work / name, settings_for(args)) for name in names]
    except BenchError as exc:
        print(f"serve_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"serve_bench: interrupted ({exc or 'SIGINT'}); the servers it started are "
              "stopped", file=sys.stderr)
        return 130
    print_results(reports)
    _write_json(args.json_out, {"models": [asdict(r) for r in reports]})
    return 0


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT (even if inherited as ignored) raise KeyboardInterrupt, so every
    ``finally`` stops the servers it started."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def check_prerequisites() -> None:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed; run benchmarks/setup-kserve.sh "
                         "(or apt-get install wrk)")
    if not KSERVE_PYTHON.exists():
        raise BenchError(f"{KSERVE_PYTHON} is missing; run benchmarks/setup-kserve.sh")
    probe = subprocess.run([sys.executable, "-m", "neofleet.cli", "serve", "--help"],
                           capture_output=True, text=True, check=False, timeout=120)
    if probe.returncode != 0:
        raise BenchError(f"`neofleet serve` is not available: {probe.stderr.strip()[-300:]}")




def _write_json(path: Path | None, doc: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def _log(message: str) -> None:
    print(f"[serve-bench] {message}", file=sys.stderr, flush=True)


# --- model preparation -------------------------------------------------------------------


@dataclass
class Prepared:
    name: str
    onnx: Path
    bundle: Path
    backend: str
    x: np.ndarray
    reference: np.ndarray
    body: Path
    headers: dict[str, str]

    @property
    def request(self) -> str:
        binary = "Inference-Header-Content-Length" in self.headers
        kind = "binary tensor extension" if binary else "JSON data"
        return f"{kind}, {self.body.stat().st_size} bytes"


def prepare_model(name: str, work: Path, binary: bool = False) -> Prepared:
    """Export ONNX, compile it with neofleet for ``native``, write the OIP request body."""
    import models

    builders: dict[str, Callable[[], Any]] = {"mlp": lambda: models.mlp(1),
                                              "mobilenetv2": models.mobilenetv2}
    if name not in builders:
        raise BenchError(f"unknown model {name!r}; choose from {sorted(builders)}")
    work.mkdir(parents=True, exist_ok=True)
    module, inputs = builders[name]()
    x = quantize_input(inputs[0].numpy())
    onnx_path = models.export_onnx(module, inputs, work / "model.onnx")
    bundle, backend = compile_bundle(onnx_path, x.shape, work / "out")
    body = work / ("request.bin" if binary else "request.json")
    content, headers = oip_request(INPUT_NAME, x, binary)
    body.write_bytes(content)
    return Prepared(name, onnx_path, bundle, backend, x, ort_reference(onnx_path, x), body,
                    headers)


def quantize_input(x: np.ndarray) -> np.ndarray:
    """Round to multiples of 1/256 (like normalised 8-bit pixels): short, exact JSON text."""
    return (np.round(x.astype(np.float32) * 256) / 256).astype(np.float32)


def oip_request(name: str, x: np.ndarray, binary: bool = False) -> tuple[bytes, dict[str, str]]:
    """The Open Inference Protocol v2 body and headers for one FP32 input: JSON data
    (flattened), or the binary tensor extension (a JSON header, then the raw bytes)."""
    tensor: dict[str, Any] = {"name": name, "shape": list(x.shape), "datatype": "FP32"}
    if not binary:
        tensor["data"] = x.reshape(-1).tolist()
        doc = json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()
        return doc, {"Content-Type": "application/json"}
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()
    return head + raw, {"Content-Type": "application/octet-stream",
                        "Inference-Header-Content-Length": str(len(head))}




def compile_bundle(onnx_path: Path, shape: tuple[int, ...], out: Path) -> tuple[Path, str]:
    from neofleet.compiler.inputs import InputDecl
    from neofleet.compiler.pipeline import CompileRequest, compile_model

    shutil.rmtree(out, ignore_errors=True)
    request = CompileRequest(model=onnx_path, framework="onnx",
                             inputs=[InputDecl(INPUT_NAME, tuple(shape), "float32")],
                             targets=["native"], output=out, backend="auto",
                             progress=lambda line: _log(f"  compile: {line}"))
    start = time.perf_counter()
    result = compile_model(request).targets[0]
    if result.bundle is None:
        raise BenchError(f"compile of {onnx_path} failed: {result.error}")
    backend = result.bundle.meta.neofleet.backend
    _log(f"compiled {onnx_path.parent.name} in {time.perf_counter() - start:.1f} s -> {backend}")
    return Path(result.bundle.path), backend


def _ort_session(onnx_path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def ort_reference(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    session = _ort_session(onnx_path)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


# --- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    model: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def infer_path(self) -> str:
        return f"/v2/models/{self.model}/infer"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.infer_path}"

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM the server's process group, wait, then SIGKILL it (by PID only)."""
        if self.proc.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _log(f"{self.name} (pid {self.pid}) ignored SIGTERM; killing it")
                _signal_group(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        _log(f"stopped {self.name} (pid {self.pid}, exit {self.proc.returncode})")


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group the server leads (it was started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def neofleet_command(prep: Prepared, port: int) -> list[str]:
    return [sys.executable, "-m", "neofleet.cli", "serve", str(prep.bundle), "--name", prep.name,
            "--host", "127.0.0.1", "--port", str(port), "--threads", str(THREADS)]


def kserve_command(prep: Prepared, port: int) -> list[str]:
    return [str(KSERVE_PYTHON), str(Path(__file__).resolve()), "--kserve-server", str(prep.onnx),
            str(port), prep.name, str(THREADS)]


def start_server(kind: str, prep: Prepared, stack: contextlib.ExitStack) -> Server:
    port = free_port()
    command = neofleet_command(prep, port) if kind == "neofleet" else kserve_command(prep, port)
    log = prep.bundle.parent.parent / f"{kind}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(kind, prep.name, proc, port, log)
    stack.callback(server.stop)
    _log(f"started {kind} for {prep.name} on 127.0.0.1:{port} (pid {proc.pid}); log {log}")
    wait_ready(server)
    return server


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with {server.proc.returncode} before it was "
                             f"ready:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_request(server.port, "GET", "/v2/health/ready", timeout=2.0)
            if status == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"{server.name} not ready after {READY_TIMEOUT_S:.0f} s:\n"
                     f"{server.log_tail()}")


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None,
                 timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_response(server: Server, prep: Prepared) -> float:
    """POST the benchmark body once; compare the output with ONNX Runtime's; max abs diff."""
    status, payload = http_request(server.port, "POST", server.infer_path,
                                   prep.body.read_bytes(), prep.headers)
    if status != 200:
        raise BenchError(f"{server.name}: POST {server.infer_path} answered {status}: "
                         f"{payload[:300]!r}; refusing to report timings")
    got = decode_output(json.loads(payload))
    return compare_outputs(server.name, got, prep.reference)


def decode_output(doc: dict[str, Any]) -> np.ndarray:
    output = doc["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def compare_outputs(label: str, got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        raise BenchError(f"{label}: output shape {list(got.shape)}, ONNX Runtime gives "
                         f"{list(want.shape)}; refusing to report timings")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    if not np.allclose(got, want, rtol=RTOL, atol=ATOL):
        raise BenchError(f"{label}: output differs from ONNX Runtime on the original model "
                         f"(max abs diff {diff:.3g}, rtol {RTOL}, atol {ATOL}); refusing to "
                         "report timings")
    return diff


# --- process accounting ------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/PID/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 1000:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return found


def parse_vmrss_kb(status_text: str) -> int | None:
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def rss_mb(pid: int) -> float | None:
    """VmRSS of the process and its descendants, MB; None once it is gone."""
    total = 0
    for member in process_tree(pid):
        try:
            kb = parse_vmrss_kb(Path(f"/proc/{member}/status").read_text())
        except OSError:
            continue
        total += kb or 0
    return total / 1024 if total else None


def parse_cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks) from a /proc/PID/stat line."""
    fields = stat_text.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ticks += parse_cpu_ticks(Path(f"/proc/{member}/stat").read_text())
    return ticks / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float | None:
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPUs used by one server, and by everything else but it, wrk and this process."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.start = self._sample()

    def _sample(self) -> tuple[float, float | None, float, float]:
        return (time.perf_counter(), system_busy_seconds(), cpu_seconds(self.pid),
                time.process_time())

    def finish(self, wrk_cpu_s: float) -> tuple[float | None, float | None]:
        end = self._sample()
        wall = end[0] - self.start[0]
        if wall <= 0:
            return None, None
        server = (end[2] - self.start[2]) / wall
        if end[1] is None or self.start[1] is None:
            return server, None
        own = end[3] - self.start[3]
        others = (end[1] - self.start[1] - (end[2] - self.start[2]) - own - wrk_cpu_s) / wall
        return server, max(0.0, others)


# --- load generator: wrk -----------------------------------------------------------------

_LUA = r"""-- generated by serve_bench.py: POST one OIP v2 JSON body, report stats as JSON
wrk.method = "POST"
@HEADERS@
local f = assert(io.open(@BODY@, "rb"))
wrk.body = f:read("*a")
f:close()

local threads = {}
function setup(thread) table.insert(threads, thread) end

first_error = ""
function response(status, headers, body)
  if status >= 300 and first_error == "" then
    first_error = status .. " " .. string.sub(body or "", 1, 300)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local first = ""
  for _, t in ipairs(threads) do
    local v = t:get("first_error")
    if first == "" and v and v ~= "" then first = v end
  end
  first = first:gsub('[%c"\\]', " ")
  io.write(string.format(
    '@MARK@{"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"first_error":"%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout,
    first))
end
"""


def lua_script(body_path: Path, headers: dict[str, str]) -> str:
    lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}"
                      for k, v in headers.items())
    return (_LUA.replace("@BODY@", json.dumps(str(body_path))).replace("@MARK@", WRK_MARK)
            .replace("@HEADERS@", lines))


def parse_wrk_output(stdout: str) -> WrkStats:
    for line in reversed(stdout.splitlines()):
        if line.startswith(WRK_MARK):
            doc = json.loads(line[len(WRK_MARK):])
            break
    else:
        raise BenchError(f"wrk printed no result line:\n{stdout[-1000:]}")
    return WrkStats(requests=doc["requests"], duration_s=doc["duration_us"] / 1e6,
                    p50_ms=doc["p50_us"] / 1000, p95_ms=doc["p95_us"] / 1000,
                    p99_ms=doc["p99_us"] / 1000, max_ms=doc["max_us"] / 1000,
                    status_errors=doc["status"],
                    transport_errors=doc["connect"] + doc["read"] + doc["write"]
                    + doc["timeout"], first_error=doc["first_error"].strip())


def wrk_command(url: str, script: Path, concurrency: int, seconds: float) -> list[str]:
    return ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "--latency", "-s", str(script), url]


def start_wrk(url: str, script: Path, concurrency: int, seconds: float,
              out: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(wrk_command(url, script, concurrency, seconds), stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


Waited = tuple[int, int, Any]  # what os.wait4 returns: pid, status, rusage


def finish_wrk(proc: subprocess.Popen[bytes], out: Any, waited: Waited | None = None) -> WrkStats:
    """Wait for wrk (with its CPU time from wait4) and parse its result line."""
    try:
        _, status, usage = waited or os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited {proc.returncode}:\n{text[-1000:]}")
    stats = parse_wrk_output(text)
    stats.wrk_cpu_s = usage.ru_utime + usage.ru_stime
    return stats


def run_wrk(server: Server, script: Path, concurrency: int, seconds: float) -> WrkStats:
    with tempfile.TemporaryFile() as out:
        proc = start_wrk(server.url, script, concurrency, seconds, out)
        return finish_wrk(proc, out)


# --- the comparison ----------------------------------------------------------------------


def bench_model(name: str, work: Path, settings: Settings) -> ModelReport:
    prep = prepare_model(name, work, settings.binary)
    report = ModelReport(model=name, backend=prep.backend, request=prep.request)
    script = work / "post.lua"
    script.write_text(lua_script(prep.body, prep.headers))
    with contextlib.ExitStack() as stack:
        servers = {kind: start_server(kind, prep, stack) for kind in SERVERS}
        for kind, server in servers.items():
            report.max_abs_diff[kind] = check_response(server, prep)
            _log(f"{kind}: output matches ONNX Runtime (max abs diff "
                 f"{report.max_abs_diff[kind]:.3g}); warming up {settings.warmup_s:.0f} s")
            run_wrk(server, script, max(settings.concurrency), settings.warmup_s)
        for i, concurrency in enumerate(settings.concurrency):
            order = list(SERVERS) if i % 2 == 0 else list(reversed(SERVERS))
            for kind in order:
                report.rows.append(timed_row(name, servers[kind], script, concurrency,
                                             settings.seconds))
            if concurrency == 1:
                report.bare_dlr_ms, report.bare_ort_ms = bare_latencies(prep, settings.bare_s)
                report.decode_ms = decode_latency(prep, settings.bare_s / 4)
        report.rss_mb = {kind: rss_mb(server.pid) for kind, server in servers.items()}
        for server in servers.values():
            check_response(server, prep)
    return report


def timed_row(model: str, server: Server, script: Path, concurrency: int,
              seconds: float) -> Row:
    meter = CpuMeter(server.pid)
    stats = run_wrk(server, script, concurrency, seconds)
    server_cpus, others = meter.finish(stats.wrk_cpu_s)
    _log(f"{model} {server.name} c={concurrency}: {stats.requests} requests, "
         f"p50 {stats.p50_ms:.3f} ms, {stats.throughput:.1f} req/s, {stats.errors} errors "
         f"{stats.first_error}")
    return Row(model, server.name, concurrency, stats, server_cpus, others)


def bare_latencies(prep: Prepared, seconds: float) -> tuple[float, float]:
    """Median ms of DLRModel.run and of ONNX Runtime on the original model, interleaved."""
    from neofleet.runtime import DLRModel

    model = DLRModel(str(prep.bundle), "cpu", num_threads=THREADS)
    session = _ort_session(prep.onnx)
    feed = {session.get_inputs()[0].name: prep.x}
    runners: dict[str, Callable[[], Any]] = {
        "dlr": lambda: model.run({INPUT_NAME: prep.x}),
        "ort": lambda: session.run(None, feed)}
    samples: dict[str, list[float]] = {key: [] for key in runners}
    rounds = 6
    for r in range(rounds):
        for key in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            samples[key] += _time_for(runners[key], seconds / rounds / 2)
    return statistics.median(samples["dlr"]), statistics.median(samples["ort"])


def decode_latency(prep: Prepared, seconds: float) -> float:
    """Median ms to turn the request body into the input array (orjson + numpy), here."""
    try:
        import orjson

        loads: Callable[[bytes], Any] = orjson.loads
    except ImportError:
        loads = json.loads
    body = prep.body.read_bytes()
    head = int(prep.headers.get("Inference-Header-Content-Length", len(body)))

    def decode() -> np.ndarray:
        tensor = loads(body[:head])["inputs"][0]
        if head < len(body):
            return np.frombuffer(body, "<f4", offset=head).reshape(tensor["shape"])
        return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])

    return statistics.median(_time_for(decode, seconds))


def _time_for(run: Callable[[], Any], seconds: float) -> list[float]:
    run()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000)
    return times


# --- soak --------------------------------------------------------------------------------


SOAK_SETTLE_S = 3.0  # after the load stops, let requests in flight finish before an idle sample


@dataclass
class Soak:
    seconds: float
    idle_before_mb: float
    idle_after_mb: float
    loaded_mb: list[tuple[float, float]]  # (t s, MB) every 60 s while wrk runs
    stats: WrkStats
    server_cpus: float | None
    others_cpus: float | None


def soak_model(name: str, work: Path, seconds: float, binary: bool) -> dict[str, Any]:
    prep = prepare_model(name, work, binary)
    script = work / "post.lua"
    script.write_text(lua_script(prep.body, prep.headers))
    with contextlib.ExitStack() as stack:
        server = start_server("neofleet", prep, stack)
        diff = check_response(server, prep)
        run_wrk(server, script, SOAK_CONCURRENCY, 5.0)
        print(f"soak: {name} ({prep.backend} bundle), neofleet serve --threads {THREADS}, "
              f"wrk concurrency {SOAK_CONCURRENCY}, {seconds:.0f} s, request {prep.request}; "
              f"output max abs diff vs ONNX Runtime {diff:.3g}", flush=True)
        soak = soak_run(server, script, seconds)
        check_response(server, prep)
    for line in soak_summary(soak):
        print(line, flush=True)
    return {"model": name, **asdict(soak)}


def soak_run(server: Server, script: Path, seconds: float) -> Soak:
    """Drive ``server`` for ``seconds``: RSS idle before, every 60 s under load, idle after."""
    time.sleep(SOAK_SETTLE_S)
    before = _rss_sample(server, 0.0, "idle, after the warm-up")
    loaded: list[tuple[float, float]] = []
    meter = CpuMeter(server.pid)
    with tempfile.TemporaryFile() as out:
        start = time.monotonic()
        proc = start_wrk(server.url, script, SOAK_CONCURRENCY, seconds, out)
        try:
            waited = _sample_while_running(proc, server, start, seconds, loaded)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        stats = finish_wrk(proc, out, waited)
    server_cpus, others = meter.finish(stats.wrk_cpu_s)
    time.sleep(SOAK_SETTLE_S)
    after = _rss_sample(server, time.monotonic() - start, "idle, after the load")
    return Soak(seconds, before[1], after[1], loaded, stats, server_cpus, others)


def _sample_while_running(proc: subprocess.Popen[bytes], server: Server, start: float,
                          seconds: float, samples: list[tuple[float, float]]) -> Waited | None:
    """Append an RSS sample every 60 s until wrk exits (reaped here) or the time is up;
    none in the last 5 s, which would race with the end of the load."""
    next_sample = SOAK_SAMPLE_S
    while time.monotonic() - start < seconds + 60:
        time.sleep(0.5)
        waited = os.wait4(proc.pid, os.WNOHANG)
        if waited[0]:
            return waited
        now = time.monotonic() - start
        if next_sample <= now < seconds - 5:
            samples.append(_rss_sample(server, now, "under load"))
            next_sample += SOAK_SAMPLE_S
    return None


def _rss_sample(server: Server, t: float, phase: str) -> tuple[float, float]:
    mb = rss_mb(server.pid)
    if mb is None:
        raise BenchError(f"{server.name} (pid {server.pid}) is gone:\n{server.log_tail()}")
    print(f"  t={t:6.0f} s  RSS {mb:8.1f} MB  ({phase})", flush=True)
    return t, mb


def soak_summary(soak: Soak) -> list[str]:
    idle = soak.idle_after_mb - soak.idle_before_mb
    lines = [f"  RSS idle: before {soak.idle_before_mb:.1f} MB, after {soak.idle_after_mb:.1f} MB"
             f", growth {idle:+.1f} MB"]
    if soak.loaded_mb:
        (t0, first), (t1, last) = soak.loaded_mb[0], soak.loaded_mb[-1]
        values = [mb for _, mb in soak.loaded_mb]
        lines.append(f"  RSS under load: first {first:.1f} MB (t={t0:.0f} s), last {last:.1f} MB "
                     f"(t={t1:.0f} s), range {min(values):.1f}-{max(values):.1f} MB, growth "
                     f"{last - first:+.1f} MB")
    else:
        lines.append("  RSS under load: no sample (the soak is shorter than 65 s)")
    st = soak.stats
    lines.append(f"  wrk: {st.requests} requests, p50 {st.p50_ms:.3f} ms, p99 {st.p99_ms:.3f} ms, "
                 f"{st.throughput:.1f} req/s, {st.errors} errors {st.first_error}".rstrip()
                 + f"; server CPUs {_fmt(soak.server_cpus, 2)}, others' CPUs "
                 f"{_fmt(soak.others_cpus, 2)}, load average {os.getloadavg()[0]:.2f} (1 min)")
    return lines


# --- output ------------------------------------------------------------------------------

COLUMNS = ("model", "server", "conc", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s",
           "errors", "server CPUs", "others' CPUs")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cells(row: Row) -> list[str]:
    s = row.stats
    return [row.model, row.server, str(row.concurrency), str(s.requests), _fmt(s.p50_ms),
            _fmt(s.p95_ms), _fmt(s.p99_ms), _fmt(s.throughput, 1), str(s.errors),
            _fmt(row.server_cpus, 2), _fmt(row.others_cpus, 2)]


def format_table(rows: list[Row]) -> str:
    body = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_lines(report: ModelReport) -> list[str]:
    m = report.model
    lines = [f"{m}: outputs vs ONNX Runtime on the original model, max abs diff: "
             + ", ".join(f"{k} {v:.3g}" for k, v in report.max_abs_diff.items())]
    nf, ks = report.p50("neofleet", 1), report.p50("kserve", 1)
    if nf is not None and report.bare_dlr_ms is not None:
        lines.append(f"{m}: neofleet p50 at concurrency 1 {nf:.3f} ms - bare DLRModel.run p50 "
                     f"{report.bare_dlr_ms:.3f} ms = overhead {nf - report.bare_dlr_ms:.3f} ms "
                     f"(target < {TARGET_OVERHEAD_MS} ms)")
    if report.decode_ms is not None:
        lines.append(f"{m}: decoding the request body alone ({report.request}; orjson + "
                     f"numpy) takes {report.decode_ms:.3f} ms (median, in this process)")
    if ks is not None and report.bare_ort_ms is not None:
        lines.append(f"{m}: kserve p50 at concurrency 1 {ks:.3f} ms - bare onnxruntime p50 "
                     f"{report.bare_ort_ms:.3f} ms = overhead {ks - report.bare_ort_ms:.3f} ms")
    lines.append(f"{m}: throughput neofleet/kserve: " + ", ".join(
        f"c={c} {_fmt(_ratio(report, c), 2)}x" for c in _levels(report)))
    lines.append(f"{m}: RSS at the end: " + ", ".join(
        f"{k} {_fmt(v, 0)} MB" for k, v in report.rss_mb.items()))
    return lines


def _levels(report: ModelReport) -> list[int]:
    return sorted({row.concurrency for row in report.rows})


def _ratio(report: ModelReport, concurrency: int) -> float | None:
    rates = {row.server: row.stats.throughput for row in report.rows
             if row.concurrency == concurrency}
    if rates.get("kserve"):
        return rates.get("neofleet", 0.0) / rates["kserve"]
    return None


def target_misses(report: ModelReport) -> list[str]:
    out = []
    nf = report.p50("neofleet", 1)
    if nf is not None and report.bare_dlr_ms is not None \
            and nf - report.bare_dlr_ms >= TARGET_OVERHEAD_MS:
        out.append(f"TARGET MISSED: {report.model}: neofleet p50 overhead "
                   f"{nf - report.bare_dlr_ms:.3f} ms >= {TARGET_OVERHEAD_MS} ms")
    for c in _levels(report):
        ratio = _ratio(report, c)
        if ratio is not None and ratio < 1.0:
            out.append(f"TARGET MISSED: {report.model} c={c}: neofleet throughput is "
                       f"{ratio:.2f}x KServe's")
    for row in report.rows:
        if row.stats.errors:
            out.append(f"ERRORS: {report.model} {row.server} c={row.concurrency}: "
                       f"{row.stats.status_errors} status, {row.stats.transport_errors} "
                       f"transport; first: {row.stats.first_error or '-'}")
    return out


def print_results(reports: list[ModelReport]) -> None:
    from models import cpu_model

    print(f"host: {cpu_model()}, {os.cpu_count()} CPUs; servers use {THREADS} threads; "
          f"load generator wrk -t1; kserve {_kserve_version()}; load average "
          f"{os.getloadavg()[0]:.2f} (1 min) at the end")
    print("bundles and requests: " + "; ".join(f"{r.model} {r.backend} bundle, request "
                                              f"{r.request}" for r in reports))
    rows = [row for r in reports for row in sorted(
        r.rows, key=lambda row: (row.concurrency, SERVERS.index(row.server)))]
    print(format_table(rows))
    print()
    for report in reports:
        for line in summary_lines(report) + target_misses(report):
            print(line)




def _kserve_version() -> str:
    code = "from importlib.metadata import version; print(version('kserve'))"
    proc = subprocess.run([str(KSERVE_PYTHON), "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    return proc.stdout.strip() or "unknown"


# --- the KServe side (runs in benchmarks/.venv-kserve) -----------------------------------


def kserve_server_main(onnx_path: str, port: str, name: str, threads: str) -> int:
    """Serve ``onnx_path`` with KServe's ModelServer on 127.0.0.1:``port`` (REST only)."""
    sys.argv = sys.argv[:1]  # kserve parses sys.argv when imported
    import kserve
    import uvicorn

    _force_loopback(uvicorn)
    model = _onnx_kserve_model(kserve, name, onnx_path, int(threads))
    model.load()
    server = kserve.ModelServer(http_port=int(port), enable_grpc=False, workers=1,
                                enable_latency_logging=False)
    for per_request_logger in ("uvicorn.access", "kserve.trace"):  # no log line per request
        logging.getLogger(per_request_logger).disabled = True
    server.start([model])
    return 0


def _force_loopback(uvicorn: Any) -> None:
    """KServe's RESTServer binds 0.0.0.0 unconditionally; bind 127.0.0.1 instead."""
    original = uvicorn.Config

    def loopback_config(*args: Any, **kwargs: Any) -> Any:
        kwargs["host"] = "127.0.0.1"
        return original(*args, **kwargs)

    uvicorn.Config = loopback_config


def _onnx_kserve_model(kserve: Any, name: str, onnx_path: str, threads: int) -> Any:
    import onnxruntime as ort
    from kserve.utils.numpy_codec import from_np_dtype

    class OnnxRuntimeModel(kserve.Model):  # type: ignore[misc]
        """ONNX Runtime on the original model, default session options, N intra-op threads."""

        def load(self) -> bool:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(onnx_path, options,
                                                providers=["CPUExecutionProvider"])
            self.ready = True
            return True

        def predict(self, payload: Any, headers: Any = None) -> Any:
            feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
            results = self.session.run(None, feeds)
            outputs = [kserve.InferOutput(name=meta.name, shape=list(array.shape),
                                          datatype=from_np_dtype(array.dtype), data=array)
                       for meta, array in zip(self.session.get_outputs(), results, strict=True)]
            return kserve.InferResponse(response_id=payload.id or "", model_name=self.name,
                                        infer_outputs=outputs)

    return OnnxRuntimeModel(name)


if __name__ == "__main__":
    sys.exit(main())
