#!/usr/bin/env bash
# Install what benchmarks/serve_bench.py needs beyond .venv: wrk (Debian), and KServe's Python
# model server with ONNX Runtime in its own virtual environment, benchmarks/.venv-kserve.
# KServe pins heavy dependencies (fastapi, uvicorn, grpcio, protobuf, ...) that must not leak
# into neofleet's .venv.
#
#   benchmarks/setup-kserve.sh          # idempotent: a stamp file skips a finished install
#   KSERVE_VERSION=0.21.0 benchmarks/setup-kserve.sh
#
# Prints the installed versions of kserve, onnxruntime and numpy.
set -euo pipefail

if ! command -v wrk >/dev/null 2>&1; then
    echo "setup-kserve: installing wrk (the load generator)" >&2
    apt-get install -y wrk >/dev/null
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/.venv-kserve"
spec="kserve${KSERVE_VERSION:+==${KSERVE_VERSION}} onnxruntime numpy"
stamp="${venv}/.neofleet-installed"

if [[ ! -f "${stamp}" || "$(cat "${stamp}")" != "${spec}" ]]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        echo "setup-kserve: python3 venv support is missing; installing python3-venv" >&2
        apt-get install -y python3-venv >/dev/null
    fi
    rm -rf "${venv}"
    python3 -m venv "${venv}"
    # shellcheck disable=SC2086  # the spec is a list of requirement words
    "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check ${spec}
    echo "${spec}" > "${stamp}"
fi

"${venv}/bin/python" - <<'EOF'
from importlib.metadata import version
print("kserve-venv:", ", ".join(f"{p} {version(p)}" for p in ("kserve", "onnxruntime", "numpy")))
EOF
