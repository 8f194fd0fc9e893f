#!/usr/bin/env bash
# The main job on an embedded default, the whole story on this machine: install
# everything, then `neofleet sandbox demo`: a real Kubernetes control plane with simulated
# node pools, a registry and Prometheus, the operator installed from the Helm chart, a
# CompilationJob for three targets, and an EdgeModelDeployment canary under live traffic.
# (examples/quickstart.py is the compile-only story: no cluster.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/neofleet sandbox demo "$@"
