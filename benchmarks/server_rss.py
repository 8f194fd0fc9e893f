"""RSS of `neofleet serve` holding a bundle, in a runtime-only environment.

    python3 -m venv /tmp/rt && /tmp/rt/bin/pip install '.[runtime]'   # no compiler, no torch
    python benchmarks/server_rss.py --python /tmp/rt/bin/python BUNDLE [BUNDLE ...]

Starts the server from that interpreter on a free 127.0.0.1 port, waits for readiness,
sends 20 JSON inference requests of zeros, prints VmRSS and VmHWM of the server process
and whether tvm, torch or onnx got imported there, then stops it by PID.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np

DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int64": "INT64",
             "int32": "INT32", "uint8": "UINT8", "int8": "INT8", "bool": "BOOL"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(base: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(base + "/v2/health/ready", timeout=1).status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {base} not ready after {seconds} s")


def _request_body(meta: dict) -> bytes:
    inputs = [{"name": t["name"], "shape": t["shape"], "datatype": t["datatype"],
               "data": np.zeros(t["shape"]).ravel().tolist()} for t in meta["inputs"]]
    return json.dumps({"inputs": inputs}).encode()


def measure(python: str, bundle: Path, name: str = "bench") -> str:
    port = _free_port()
    proc = subprocess.Popen([python, "-m", "neofleet.cli", "serve", str(bundle), "--port",
                             str(port), "--name", name, "--threads", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base)
        meta = json.load(urllib.request.urlopen(f"{base}/v2/models/{name}"))
        body = _request_body(meta)
        for _ in range(20):
            request = urllib.request.Request(f"{base}/v2/models/{name}/infer", data=body,
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request).read()
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        values = {line.split(":")[0]: line.split()[1] for line in status
                  if line.startswith(("VmRSS", "VmHWM"))}
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        heavy = [lib for lib in ("libtorch", "libtvm_compiler", "onnx_cpp2py") if lib in maps]
        return (f"{bundle}: VmRSS {int(values['VmRSS']) / 1024:.0f} MB, VmHWM "
                f"{int(values['VmHWM']) / 1024:.0f} MB, heavy libraries mapped: {heavy or 'none'}")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="interpreter of a runtime-only venv")
    parser.add_argument("bundles", nargs="+", type=Path)
    args = parser.parse_args()
    for bundle in args.bundles:
        print(measure(args.python, bundle))


if __name__ == "__main__":
    main()
