#!/usr/bin/env bash
# The test command: install what is missing, lint, type-check, then run the tests.
# Extra arguments go to pytest (e.g. `scripts/test.sh tests/unit -q`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
