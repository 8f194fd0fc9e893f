#!/usr/bin/env bash
# Refresh requirements.lock: the exact versions a fresh machine installs (scripts/install.sh,
# the images of scripts/build-images.sh and the emulated aarch64 Python all read it).
#
#   scripts/lock.sh            # resolve neofleet[dev] anew in a throwaway venv, write the lock
#
# A bump is a deliberate commit: run this, then scripts/test.sh, then commit the lock with
# the tests' result. Versions pinned in pyproject.toml (TVM, tvm-ffi, torch, treelite...)
# stay as pinned there; everything else resolves to the newest release pip finds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
MOTO_VERSION=5.2.1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$work/venv/bin/python" -m pip install -q ".[dev]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$work/venv/bin/python" -c "import neofleet, tvm, onnxruntime, torch" >/dev/null
bash scripts/freeze-lock.sh "$work/venv/bin/python" > requirements.lock
# moto's S3 server (tests only) lives in its own venv: botocore pins python-dateutil<3
"$PYTHON" -m venv "$work/moto"
"$work/moto/bin/python" -m pip install -q "moto[server]==$MOTO_VERSION" 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$work/moto/bin/python" -c "import moto.server" >/dev/null
bash scripts/freeze-lock.sh "$work/moto/bin/python" > requirements-moto.lock
echo "lock: wrote requirements.lock ($(grep -c '==' requirements.lock) packages) and" \
  "requirements-moto.lock; now run scripts/test.sh" >&2
