#!/usr/bin/env bash
# The main job on an embedded default: install everything, then compile the example model
# for this CPU and for aarch64, verify both, run inference through DLRModel, and compare
# the latency with ONNX Runtime's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python examples/quickstart.py "$@"
