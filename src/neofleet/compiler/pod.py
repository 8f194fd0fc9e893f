"""What a compile pod runs: fetch → check → compile one target → push → report.

The operator puts the request in the env var ``NEOFLEET_COMPILE_REQUEST`` (JSON: the
CompilationJob's model, one target, output, verify, the result path). The result goes to
the termination-message file as one JSON object of at most 4 KiB, which the operator
reads from the pod's status; success always carries the pushed artifact's digest:

    {"ok": true, "target": "edge", "artifact": {"uri": "oci://…@sha256:…",
     "digest": "sha256:…"}, "backend": "tvm", "verification": {...}, "benchmark_ms": 1.2,
     "compiler": {...}}
    {"ok": false, "target": "edge", "reason": "VerificationFailed", "message": "…"}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from neofleet.compiler.errors import CompileError
from neofleet.errors import NeofleetError

REQUEST_ENV = "NEOFLEET_COMPILE_REQUEST"
PVC_ROOT_ENV = "NEOFLEET_PVC_ROOT"        # where the pod mounts pvc://CLAIM (default /models)
MAX_MESSAGE = 4096
MAX_DOWNLOAD = 4 << 30


class ModelFetchError(CompileError):
    reason = "ModelFetchFailed"


class ModelDigestError(CompileError):
    reason = "ModelDigestMismatch"


def run_request(request: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Do the whole job; the result document (never raises a NeofleetError)."""
    target = request["target"]
    try:
        model = fetch_model(request["model"], scratch / "model")
        return {"ok": True, "target": target["name"], **_compile_and_push(request, model, scratch)}
    except NeofleetError as exc:
        return {"ok": False, "target": target["name"], "reason": exc.reason,
                "message": str(exc)[:1500]}


def fetch_model(model: dict[str, Any], folder: Path, what: str = "model") -> Path:
    """The model file (or ``what`` else: the sample data), fetched from its URI into
    ``folder`` and checked against sha256."""
    uri = model["uri"]
    scheme = urllib.parse.urlsplit(uri).scheme
    folder.mkdir(parents=True, exist_ok=True)
    if scheme == "file":
        path = Path(urllib.parse.urlsplit(uri).path)
    elif scheme == "pvc":
        claim_path = uri[len("pvc://"):]
        path = Path(os.environ.get(PVC_ROOT_ENV, "/models")) / claim_path
    elif scheme == "https":
        path = _download(urllib.request.Request(uri), folder, uri)  # noqa: S310 (https only)
    elif scheme == "s3":
        path = _download_s3(uri, folder)
    elif scheme == "oci":
        path = _pull_model(uri, folder)
    else:
        raise ModelFetchError(f"{what} URIs with scheme {scheme!r} are not supported by this "
                              "compile image (file, pvc, https, s3 and oci are)")
    if not path.is_file():
        raise ModelFetchError(f"{what} {uri} not found (looked at {path})")
    _check_sha256(path, model.get("sha256"), f"{what} {uri}")
    return path


def _check_sha256(path: Path, expected: str | None, uri: str) -> None:
    if not expected:
        return
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelDigestError(f"{uri} has sha256 {digest.hexdigest()}, the spec says "
                               f"{expected}")


def _download(request: urllib.request.Request, folder: Path, uri: str) -> Path:
    """Stream ``request``'s body to ``folder`` (named after the URI), capped at 4 GiB."""
    name = Path(urllib.parse.urlsplit(uri).path).name or "model"
    path = folder / name
    try:
        with urllib.request.urlopen(request, timeout=60) as response, path.open("wb") as out:  # noqa: S310
            copied = 0
            for chunk in iter(lambda: response.read(1 << 20), b""):
                copied += len(chunk)
                if copied > MAX_DOWNLOAD:
                    raise ModelFetchError(f"model {uri} is larger than {MAX_DOWNLOAD} bytes")
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        path.unlink(missing_ok=True)
        detail = _error_detail(exc)
        raise ModelFetchError(f"cannot download {uri}: HTTP {exc.code} {detail}".rstrip()) from exc
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ModelFetchError(f"cannot download {uri}: {exc}") from exc
    return path


def _download_s3(uri: str, folder: Path) -> Path:
    from neofleet.compiler import s3

    try:
        url = s3.object_url(s3.S3Location.parse(uri), os.environ)
    except ValueError as exc:
        raise ModelFetchError(str(exc)) from exc
    request = urllib.request.Request(url, headers=s3.signed_get_headers(url))  # noqa: S310
    return _download(request, folder, uri)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """S3's ``<Code>`` and ``<Message>`` from an error body, or the HTTP reason."""
    body = exc.read(4096).decode("utf-8", "replace")
    found = {tag: re.search(f"<{tag}>([^<]*)</{tag}>", body) for tag in ("Code", "Message")}
    if found["Code"]:
        message = found["Message"].group(1) if found["Message"] else ""
        return f"{found['Code'].group(1)}: {message}".rstrip(": ")
    return str(exc.reason)


def _pull_model(uri: str, folder: Path) -> Path:
    """An OCI artifact whose single layer is the model file, pulled by digest."""
    from neofleet.bundle.errors import BundleError
    from neofleet.bundle.oci import pull_file

    try:
        return pull_file(uri, folder)
    except BundleError as exc:
        raise ModelFetchError(f"cannot pull model {uri}: {exc}") from exc


def _compile_and_push(request: dict[str, Any], model: Path, scratch: Path) -> dict[str, Any]:
    from neofleet.bundle.oci import push_bundle
    from neofleet.compiler.inputs import InputDecl
    from neofleet.compiler.pipeline import CompileRequest, compile_model
    from neofleet.compiler.verify import Tolerance

    target, verify = request["target"], request.get("verify", {})
    if "device" not in target:
        raise CompileError("platform targets are not compiled by this version; use a device "
                           "preset (`neofleet targets`)")
    inputs = [InputDecl(i["name"], tuple(i["shape"]), i.get("dtype"))
              for i in request["model"].get("inputs", [])]
    sample_data = None
    if verify.get("sampleData"):     # fetched like the model, pinned by its sha256
        sample_data = fetch_model(verify["sampleData"], scratch / "samples", "sample data")
    result = compile_model(CompileRequest(
        model=model, framework=request["model"]["framework"], inputs=inputs,
        targets=[target["device"]], output=scratch / "out", backend=target.get("backend", "auto"),
        tuning_trials=int(target.get("tuning", {}).get("trials", 0)), tuning_db=None,
        compiler_options={str(k): str(v) for k, v in
                          (target.get("compilerOptions") or {}).items()},
        tolerance=Tolerance(rtol=verify.get("rtol", 1e-3), atol=verify.get("atol", 1e-4),
                            samples=verify.get("samples", 3)),
        sample_data=sample_data,
        progress=lambda line: print(line, flush=True)))
    built = result.targets[0]
    if built.bundle is None:
        assert built.error is not None
        raise built.error
    repository = request["output"]["repository"].removeprefix("oci://")
    pushed = push_bundle(built.bundle.path, f"oci://{repository}:{target['name']}")
    meta = built.bundle.meta.neofleet
    uri = f"oci://{repository}@{pushed.manifest_digest}"
    return {"artifact": {"uri": uri, "digest": pushed.manifest_digest},
            "backend": meta.backend, "compiler": dict(meta.compiler),
            "verification": {k: v for k, v in (("maxAbsError", meta.verification.max_abs_error),
                                               ("maxRelError", meta.verification.max_rel_error))
                             if v is not None},
            "benchmark_ms": meta.benchmark.median_ms if meta.benchmark else None,
            "verification_method": meta.verification.method,
            "hardware_verified": bool(getattr(meta.verification, "hardware_verified", True))}


def write_result(result: dict[str, Any], path: Path) -> None:
    """At most 4 KiB (what the kubelet keeps), always valid JSON."""
    data = json.dumps(result, separators=(",", ":"))
    if len(data.encode()) > MAX_MESSAGE:
        result = {**result, "message": str(result.get("message", ""))[:500],
                  "compiler": {}}
        data = json.dumps(result, separators=(",", ":"))[:MAX_MESSAGE]
    path.write_text(data)


def main(result_path: Path) -> int:
    raw = os.environ.get(REQUEST_ENV)
    if not raw:
        write_result({"ok": False, "target": "", "reason": "InvalidRequest",
                      "message": f"{REQUEST_ENV} is not set"}, result_path)
        return 2
    try:
        request = json.loads(raw)
    except ValueError as exc:
        write_result({"ok": False, "target": "", "reason": "InvalidRequest",
                      "message": f"{REQUEST_ENV} is not JSON: {exc}"}, result_path)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="neofleet-pod-"))
    try:
        result = run_request(request, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_result(result, result_path)
    return 0 if result["ok"] else 1

