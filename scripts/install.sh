#!/usr/bin/env bash
# Install everything neofleet needs on Debian bookworm (idempotent; fast when done):
# apt packages (aarch64 cross toolchain, qemu-user-static, the CNCF registry), a venv in
# .venv with neofleet and its dev extra, and the emulated aarch64 Python used to verify
# aarch64 bundles under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-user-static gcc-aarch64-linux-gnu g++-aarch64-linux-gnu docker-registry
              prometheus g++ python3-venv zstd ca-certificates
              buildah podman debootstrap runc)  # images: scripts/build-images.sh
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: apt-get install ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "install: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.neofleet-install-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "install: pip install -e .[dev]" >&2
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c "import neofleet, tvm, onnxruntime, torch" >/dev/null
  rm -f .venv/.neofleet-install-*
  touch "$stamp"
fi

# moto's S3 server for the s3:// model tests, in its own interpreter: botocore pins
# python-dateutil<3, which the kubernetes client in .venv cannot share.
if ! "$PYTHON" -c "import moto.server" >/dev/null 2>&1 && [ ! -x .venv-moto/bin/python ]; then
  echo "install: creating .venv-moto with moto[server]" >&2
  "$PYTHON" -m venv .venv-moto
  .venv-moto/bin/python -m pip install -q "moto[server]==5.2.1" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv-moto/bin/python -c "import moto.server" >/dev/null
fi

PIP=".venv/bin/python -m pip" bash scripts/setup-aarch64-python.sh
echo "install: done" >&2
