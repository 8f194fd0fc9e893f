#!/usr/bin/env bash
# Run the images scripts/build-images.sh built, with podman, the way a cluster runs them:
# non-root (UID 65532), read-only root file system with tmpfs only where the pods have
# emptyDirs, every capability dropped, no new privileges.
#
#   scripts/smoke-images.sh [runtime|compiler|operator ...]     # default: all three
#
# runtime:  serves examples/models/tiny_cnn.onnx compiled on this host with the tvm, the
#           onnxruntime and the openvino backends (bundles mounted read-only), answers one OIP v2 inference
#           each (checked against ONNX Runtime on the source model), /metrics counts it,
#           and SIGTERM ends it with exit 0; inside the image torch, tvm, neofleet.compiler
#           and onnx do not import and no libtvm.so / libtorch* file exists.
# compiler: compiles tiny_cnn.onnx with TVM for `native` and `aarch64` (cross-linked, verified
#           under qemu) inside the image; the native bundle is then served by the runtime
#           image too; torch is absent.
# operator: kopf, the Kubernetes client and neofleet.operator import; torch, tvm,
#           onnxruntime and tvm-ffi are absent.
# Every container is removed on exit, whatever happens. Logs go to stderr; the last stdout
# line is JSON: {"smoke": {...}, "ok": true|false, "total_s": N}; exit 1 unless ok.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CACHE=${NEOFLEET_IMAGES_CACHE:-$HOME/.cache/neofleet/images}
TAG=${NEOFLEET_IMAGE_TAG:-dev}
PY=${PYTHON:-$ROOT/.venv/bin/python}
MODEL=$ROOT/examples/models/tiny_cnn.onnx
PODMAN=(podman --storage-driver overlay --runtime runc)
# runc (crun fails on this kind of host: hybrid cgroups), ulimits within the hard limits,
# host networking (bridge networking needs iptables), and a restricted pod's security.
# Writable places are tmpfs mounts like the pods' emptyDirs: `U` chowns one to UID 65532
# (what fsGroup does; podman 4.3 ignores mode= on a tmpfs over a folder the image has).
SECURE=(--network host --ulimit nofile=20000:20000 --ulimit nproc=4096:4096
        --user 65532:65532 --read-only --read-only-tmpfs=false --cap-drop all
        --security-opt no-new-privileges)
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(runtime compiler operator)
START=$SECONDS

log() { printf '[smoke-images] %s\n' "$*" >&2; }
has() { local x; for x in "${IMAGES[@]}"; do [ "$x" = "$1" ] && return 0; done; return 1; }

# Every container this run starts is named $PREFIX<what> (some start in subshells), so the
# exit trap finds and removes them all by name.
PREFIX="neofleet-smoke-$$-"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/neofleet-smoke-XXXXXX")
cleanup() {
  local c
  for c in $("${PODMAN[@]}" ps -a --filter "name=^$PREFIX" --format '{{.Names}}' 2>/dev/null); do
    "${PODMAN[@]}" rm -f "$c" >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for image in "${IMAGES[@]}"; do
  "${PODMAN[@]}" image exists "localhost/neofleet-$image:$TAG" \
    || { log "localhost/neofleet-$image:$TAG missing: run scripts/build-images.sh"; exit 1; }
done

# The checks that run on the host (HTTP, numerics) and inside the images (imports, files).
cat >"$WORK/check.py" <<'EOF'
"""serve URL MODEL NAME CONTAINER: wait for ready, one inference checked against ONNX Runtime."""
import json, os, subprocess, sys, time, urllib.error, urllib.request

def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()

def running(container):
    out = subprocess.run(os.environ["PODMAN"].split() + ["inspect", "--format",
                         "{{.State.Running}}", container], capture_output=True, text=True)
    return out.stdout.strip() == "true"

def serve(url, model, name, container):
    import numpy as np
    import onnxruntime as ort
    start = time.monotonic()
    while True:
        try:
            if get(url + "/v2/health/ready", 2)[0] == 200:
                break
        except (urllib.error.URLError, OSError):
            pass
        if not running(container):
            return {"ok": False, "error": "the container exited before it was ready"}
        if time.monotonic() - start > 120:
            return {"ok": False, "error": "not ready after 120 s"}
        time.sleep(0.2)
    ready_s = time.monotonic() - start
    meta = json.loads(get(f"{url}/v2/models/{name}")[1])
    spec = meta["inputs"][0]
    x = np.random.default_rng(7).standard_normal(spec["shape"]).astype(np.float32)
    body = json.dumps({"inputs": [{"name": spec["name"], "shape": spec["shape"],
                                   "datatype": "FP32", "data": x.ravel().tolist()}]}).encode()
    request = urllib.request.Request(f"{url}/v2/models/{name}/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    t = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as r:
        answer = json.loads(r.read())
    infer_ms = (time.monotonic() - t) * 1000
    out = answer["outputs"][0]
    y = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    ref = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {spec["name"]: x})[0]
    err = float(np.max(np.abs(y - ref)))
    metrics = get(url + "/metrics")[1].decode()
    counted = any(line.startswith("neofleet_inference_requests_total{")
                  and 'status="ok"' in line and line.rstrip().endswith(" 1.0")
                  for line in metrics.splitlines())
    ok = bool(np.allclose(y, ref, rtol=1e-3, atol=1e-4)) and counted
    return {"ok": ok, "platform": meta.get("platform"), "ready_s": round(ready_s, 2),
            "infer_ms": round(infer_ms, 1), "output": out["name"], "shape": out["shape"],
            "argmax": int(np.argmax(y)), "reference_argmax": int(np.argmax(ref)),
            "max_abs_error": err, "metrics_counted": counted}

if __name__ == "__main__":
    print(json.dumps(serve(*sys.argv[2:6])))
EOF
cat >"$WORK/probe.py" <<'EOF'
"""In an image: PRESENT (comma list, imported) ABSENT (comma list, must not be found)."""
import importlib, importlib.util, json, os, sys
present, absent = (a.split(",") if a else [] for a in sys.argv[1:3])
result = {"uid": os.getuid(), "gid": os.getgid(), "imported": {}, "absent": {}, "found_files": []}
for name in present:
    try:
        importlib.import_module(name)
        result["imported"][name] = True
    except Exception as exc:  # noqa: BLE001
        result["imported"][name] = f"{type(exc).__name__}: {exc}"
for name in absent:
    try:
        result["absent"][name] = importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        result["absent"][name] = True
for top in ("/usr", "/opt", "/home", "/etc", "/var", "/root"):
    for folder, dirs, files in os.walk(top):
        result["found_files"] += [os.path.join(folder, f) for f in files
                                  if f.startswith(("libtvm.so", "libtorch"))]
result["ok"] = (os.getuid() == 65532 and all(v is True for v in result["imported"].values())
                and all(result["absent"].values()) and not result["found_files"])
print(json.dumps(result))
EOF
chmod a+rx "$WORK"
chmod a+r "$WORK"/*.py

probe() {  # $1: image, $2: modules to import, $3: modules that must be absent
  "${PODMAN[@]}" run --rm --name "${PREFIX}probe-$1" "${SECURE[@]}" --tmpfs /tmp:rw,mode=1777 \
    -v "$WORK:/check:ro" \
    --entrypoint python3 "localhost/neofleet-$1:$TAG" /check/probe.py "$2" "$3"
}

serve_bundle() {  # $1: label, $2: bundle folder; prints the check's JSON
  local label=$1 bundle=$2 port name rc
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  name="$PREFIX$label"
  log "runtime: serving the $label bundle on 127.0.0.1:$port ($name)"
  "${PODMAN[@]}" run -d --name "$name" "${SECURE[@]}" \
    --tmpfs /tmp:rw,exec,nosuid,nodev,size=512m,mode=1777 \
    --tmpfs /var/cache/neofleet:rw,nosuid,nodev,size=256m,U \
    -v "$bundle:/bundle:ro" "localhost/neofleet-runtime:$TAG" \
    serve /bundle --host 127.0.0.1 --port "$port" --name tiny-cnn --threads 1 >/dev/null
  local result
  result=$(PODMAN="${PODMAN[*]}" "$PY" "$WORK/check.py" serve "http://127.0.0.1:$port" "$MODEL" \
           tiny-cnn "$name") || result='{"ok": false, "error": "the check crashed"}'
  local t=$SECONDS
  "${PODMAN[@]}" stop -t 20 "$name" >/dev/null 2>&1 || true
  rc=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$name" 2>/dev/null || echo null)
  if [ "$(echo "$result" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ok"])')" != True ] \
      || [ "$rc" != 0 ]; then
    log "runtime: the $label server's log:"
    "${PODMAN[@]}" logs "$name" 2>&1 | tail -30 >&2 || true
  fi
  "${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true
  echo "$result" | "$PY" -c "import json,sys; r = json.load(sys.stdin); r['exit_code'] = $rc; \
r['stop_s'] = $((SECONDS - t)); r['ok'] = r['ok'] and $rc == 0; print(json.dumps(r))"
}

host_bundles() {  # the tvm, onnxruntime and openvino bundles, compiled on this host (cached)
  local key dir backend
  key=$( { sha256sum "$MODEL"; find src pyproject.toml -type f ! -path '*/__pycache__/*' \
           ! -name '*.pyc' ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } \
         | sha256sum | cut -c1-16)
  dir="$CACHE/smoke-bundles/$key"
  for backend in tvm onnxruntime openvino; do
    if [ ! -f "$dir/$backend/.complete" ]; then
      rm -rf "$dir/$backend"
      log "host: neofleet compile tiny_cnn.onnx --target native --backend $backend"
      "$(dirname "$PY")/neofleet" compile "$MODEL" --framework onnx --target native \
        --backend "$backend" --output "$dir/$backend" >&2
      chmod -R a+rX "$dir"
      touch "$dir/$backend/.complete"
    fi
  done
  find "$CACHE/smoke-bundles" -mindepth 1 -maxdepth 1 ! -name "$key" -exec rm -rf {} +
  HOST_BUNDLES=$dir
}

RESULTS=()
OK=1
add() {  # $1: key, $2: JSON
  RESULTS+=("\"$1\": $2")
  [ "$(echo "$2" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["ok"])')" = True ] \
    || { OK=0; log "FAILED: $1: $2"; }
}

if has runtime; then
  log "runtime: what the image holds"
  add runtime_image "$(probe runtime neofleet.runtime.server.run,neofleet.dlr,tvm_ffi,onnxruntime,openvino,uvloop,httptools,oras.provider \
                      torch,tvm,neofleet.compiler,onnx,treelite,tl2cgen)"
  host_bundles
  add runtime_serve_tvm "$(serve_bundle tvm "$HOST_BUNDLES/tvm/native")"
  add runtime_serve_onnxruntime "$(serve_bundle onnxruntime "$HOST_BUNDLES/onnxruntime/native")"
  add runtime_serve_openvino "$(serve_bundle openvino "$HOST_BUNDLES/openvino/native")"
fi

if has compiler; then
  log "compiler: what the image holds"
  add compiler_image "$(probe compiler neofleet.compiler.pipeline,tvm,onnx,onnxruntime,treelite,tl2cgen,xgboost,lightgbm,sklearn,skops,oras.provider torch)"
  out="$WORK/compiled"
  mkdir -p "$out" && chown 65532:65532 "$out"
  log "compiler: neofleet compile tiny_cnn.onnx --target native --target aarch64 --backend tvm (in the image)"
  t=$SECONDS
  name="${PREFIX}compile"
  if "${PODMAN[@]}" run --name "$name" "${SECURE[@]}" \
      --tmpfs /scratch:rw,exec,nosuid,nodev,size=2g,U \
      -v "$(dirname "$MODEL"):/models:ro" -v "$out:/out" "localhost/neofleet-compiler:$TAG" \
      compile "/models/$(basename "$MODEL")" --framework onnx --target native --target aarch64 \
      --backend tvm --output /out --json >"$WORK/compile.json" 2>"$WORK/compile.log"; then
    compile_ok=true
  else
    compile_ok=false
    tail -30 "$WORK/compile.log" >&2
  fi
  "${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true
  add compiler_compile "$("$PY" - "$WORK/compile.json" "$compile_ok" "$((SECONDS - t))" <<'EOF'
import json, sys
try:
    result = json.load(open(sys.argv[1]))
except ValueError:
    result = {"targets": []}
targets = {t["target"]: {"status": t["status"], "backend": t.get("backend"),
                         "verification": (t.get("verification") or {}).get("method")}
           for t in result.get("targets", [])}
ok = (sys.argv[2] == "true" and result.get("ok") is True
      and all(t["status"] == "Succeeded" for t in targets.values()) and len(targets) == 2)
print(json.dumps({"ok": ok, "seconds": int(sys.argv[3]), "targets": targets}))
EOF
)"
  if has runtime && [ -f "$out/native/manifest.json" ]; then
    chmod -R a+rX "$out"
    add runtime_serve_compiler_image_bundle "$(serve_bundle compiled-in-image "$out/native")"
  fi
fi

if has operator; then
  log "operator: what the image holds"
  add operator_image "$(probe operator neofleet.operator.main,kopf,kubernetes,prometheus_client torch,tvm,onnxruntime,tvm_ffi)"
fi

joined=$(IFS=,; echo "${RESULTS[*]}")
ok=$([ "$OK" -eq 1 ] && echo true || echo false)
log "done in $((SECONDS - START)) s: ok=$ok"
echo "{\"smoke\": {$joined}, \"ok\": $ok, \"total_s\": $((SECONDS - START))}"
[ "$OK" -eq 1 ]
