#!/usr/bin/env bash
# Build the emulated aarch64 Python that verifies cross-compiled bundles under qemu-user.
#
#   scripts/setup-aarch64-python.sh          # idempotent; a no-op when the stamp matches
#
# Result, at ${NEOFLEET_AARCH64_PYTHON:-$HOME/.cache/neofleet/aarch64-python}:
#   sysroot/              Debian bookworm arm64 debs unpacked with dpkg-deb -x: libc6,
#                         libstdc++6, CPython 3.11 and the libraries its stdlib links
#   site-packages/        aarch64 wheels from PyPI, unzipped (numpy, pydantic, tvm-ffi, ORT,
#                         and what `neofleet serve` imports: click, starlette, uvicorn, oras...)
#   lib/libtvm_runtime.so from the aarch64 apache-tvm wheel (not the compiler library)
#   versions.txt          the deb and wheel versions that were unpacked
#   stamp                 written last: the pinned versions + sha256 of this script
#
# Run it as:  qemu-aarch64-static -L sysroot sysroot/usr/bin/python3.11 ...
# (neofleet.compiler.emulation does). Nothing is installed with dpkg, no foreign
# architecture is added to the host and binfmt is never registered. Debs come from the
# Debian mirror only, through a private apt configuration whose Release files are checked
# against the host's Debian archive keyring; wheels come through the host pip ($PIP, else
# $PYTHON -m pip, PYTHON defaulting to the repository's .venv python, else python3) with
# --only-binary and exact pins.
#
# qemu 7.2 shows the guest the host's x86 /proc/cpuinfo, on which onnxruntime's cpuinfo
# crashes at load time; qemu -L serves files that exist in the sysroot first, so the
# sysroot carries a one-core aarch64 /proc/cpuinfo and /sys/devices/system/cpu/{possible,present}.
set -euo pipefail

HOME_DIR=${NEOFLEET_AARCH64_PYTHON:-$HOME/.cache/neofleet/aarch64-python}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/$(basename "${BASH_SOURCE[0]}")"

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
SECURITY_MIRROR=http://deb.debian.org/debian-security
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PY=python3.11
DEBS=(
  libc6 libgcc-s1 libstdc++6
  python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
  libexpat1 zlib1g libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1
  libncursesw6 libtinfo6 libreadline8 libdb5.3 libcrypt1
)
# The wheels, by name; their versions come from requirements.lock (the versions the tests
# ran on the host), so the TVM runtime and tvm-ffi match the compiler that built a bundle
# and what runs under qemu is what was tested.
WHEEL_NAMES=(
  numpy pydantic pydantic-core typing-extensions annotated-types typing-inspection
  apache-tvm-ffi onnxruntime flatbuffers packaging protobuf
)
# What `neofleet serve` imports (the sandbox agent runs arm64 nodes' neofleet pods on this
# Python): the CLI (click), the HTTP server (starlette, anyio, idna; plain uvicorn with h11:
# `serve` asks for loop/http "auto", and without uvloop/httptools that is asyncio + h11),
# /metrics, orjson, and oras for `oci://` sources with what it imports when it pulls
# (requests and its deps, jsonschema and its deps).
SERVE_WHEEL_NAMES=(
  click starlette anyio idna uvicorn h11 prometheus-client orjson
  oras requests urllib3 certifi charset-normalizer
  jsonschema jsonschema-specifications referencing rpds-py attrs
)
LOCK=${NEOFLEET_LOCK:-$ROOT/requirements.lock}

pin() {  # NAME -> NAME==VERSION from the lock (names compared as PEP 503 normalises them)
  local want line
  want=$(printf '%s' "$1" | tr 'A-Z_.' 'a-z--')
  while IFS= read -r line; do
    case $line in \#*|'') continue ;; esac
    if [ "$(printf '%s' "${line%%==*}" | tr 'A-Z_.' 'a-z--')" = "$want" ]; then
      printf '%s==%s\n' "$1" "${line#*==}"
      return
    fi
  done <"$LOCK"
  printf '[setup-aarch64-python] error: %s is not in %s (scripts/lock.sh)\n' "$1" "$LOCK" >&2
  return 1
}
pins() { local name; for name in "$@"; do pin "$name" || exit 1; done; }
[ -r "$LOCK" ] || { echo "[setup-aarch64-python] error: no lock file $LOCK" >&2; exit 1; }
mapfile -t WHEELS < <(pins "${WHEEL_NAMES[@]}")
mapfile -t SERVE_WHEELS < <(pins "${SERVE_WHEEL_NAMES[@]}")
TVM_WHEEL=$(pin apache-tvm)
[ "${#WHEELS[@]}" -eq "${#WHEEL_NAMES[@]}" ] && [ "${#SERVE_WHEELS[@]}" -eq "${#SERVE_WHEEL_NAMES[@]}" ] \
  && [ -n "$TVM_WHEEL" ] || exit 1
PLATFORMS=(manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_24_aarch64
           manylinux_2_27_aarch64 manylinux_2_28_aarch64)

log() { printf '[setup-aarch64-python] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_host_tools() {
  local missing=()
  command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
  command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
  command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install them (as root: apt-get install -y ${missing[*]})"
  # --no-install-recommends keeps binfmt-support out, so qemu's postinst registers nothing.
  log "installing ${missing[*]} with the host's apt"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    HOST_PY=$PYTHON
  elif [ -x "$ROOT/.venv/bin/python" ]; then
    HOST_PY=$ROOT/.venv/bin/python
  else
    HOST_PY=python3
  fi
  read -r -a PIP_CMD <<<"${PIP:-$HOST_PY -m pip}"
  "${PIP_CMD[@]}" --version >/dev/null 2>&1 \
    || die "no pip: set PIP (e.g. PIP='.venv/bin/python -m pip') or PYTHON"
  "$HOST_PY" -c 'import zipfile' 2>/dev/null || die "no host python ($HOST_PY): set PYTHON"
}

download_debs() {  # $1: work dir; debs land in $1/debs
  local work=$1 apt_opts
  [ -r "$KEYRING" ] || die "$KEYRING missing (apt-get install debian-archive-keyring)"
  mkdir -p "$work/apt/state/lists/partial" "$work/apt/cache/archives/partial" "$work/debs"
  : >"$work/apt/state/status"
  {
    echo "deb [arch=arm64 signed-by=$KEYRING] $MIRROR $SUITE main"
    echo "deb [arch=arm64 signed-by=$KEYRING] $MIRROR $SUITE-updates main"
    echo "deb [arch=arm64 signed-by=$KEYRING] $SECURITY_MIRROR $SUITE-security main"
  } >"$work/apt/sources.list"
  apt_opts=(-q -o "Dir::State=$work/apt/state" -o "Dir::State::status=$work/apt/state/status"
    -o "Dir::Cache=$work/apt/cache" -o "Dir::Etc::SourceList=$work/apt/sources.list"
    -o Dir::Etc::SourceParts=/dev/null -o Dir::Etc::Preferences=/dev/null
    -o Dir::Etc::PreferencesParts=/dev/null -o APT::Architecture=arm64
    -o APT::Architectures=arm64 -o Debug::NoLocking=1)
  [ "$(id -u)" -eq 0 ] && apt_opts+=(-o APT::Sandbox::User=root)
  log "apt-get update (arm64 indexes of $SUITE, private state in $work/apt)"
  apt-get "${apt_opts[@]}" update >&2
  log "apt-get download ${#DEBS[@]} arm64 debs"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" download "${DEBS[@]}" >&2)
}

unpack_debs() {  # $1: work dir
  local deb
  mkdir -p "$1/out/sysroot"
  for deb in "$1"/debs/*.deb; do
    dpkg-deb -x "$deb" "$1/out/sysroot"
    dpkg-deb -W --showformat='deb ${Package} ${Version}\n' "$deb" >>"$1/out/versions.txt"
  done
  [ -x "$1/out/sysroot/usr/bin/$PY" ] || die "$PY missing from the unpacked debs"
}

fake_cpu_files() {  # $1: sysroot
  mkdir -p "$1/proc" "$1/sys/devices/system/cpu"
  printf '%s\n' 'processor	: 0' 'BogoMIPS	: 50.00' \
    'Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp' \
    'CPU implementer	: 0x41' 'CPU architecture: 8' 'CPU variant	: 0x3' 'CPU part	: 0xd0c' \
    'CPU revision	: 1' '' >"$1/proc/cpuinfo"
  echo 0 >"$1/sys/devices/system/cpu/possible"
  echo 0 >"$1/sys/devices/system/cpu/present"
}

download_wheels() {  # $1: work dir; wheels land in $1/wheels
  local args=(download -q --no-deps --only-binary=:all: --python-version 3.11
              --implementation cp --abi cp311 --abi abi3 --abi none -d "$1/wheels")
  local p
  for p in "${PLATFORMS[@]}"; do args+=(--platform "$p"); done
  log "pip download $((${#WHEELS[@]} + ${#SERVE_WHEELS[@]})) aarch64 wheels + $TVM_WHEEL (${PIP_CMD[*]})"
  "${PIP_CMD[@]}" "${args[@]}" "${WHEELS[@]}" "${SERVE_WHEELS[@]}" "$TVM_WHEEL" >&2
}

unpack_wheels() {  # $1: work dir
  log "unzipping wheels into site-packages (libtvm_runtime.so only from apache-tvm)"
  "$HOST_PY" - "$1/wheels" "$1/out" <<'EOF'
import pathlib, shutil, sys, zipfile
wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
site, lib = out / "site-packages", out / "lib"
site.mkdir(parents=True)
lib.mkdir(parents=True)
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        if wheel.name.startswith("apache_tvm-"):
            with zf.open("tvm/lib/libtvm_runtime.so") as src, (lib / "libtvm_runtime.so").open("wb") as dst:
                shutil.copyfileobj(src, dst)
            continue
        for info in zf.infolist():
            target = zf.extract(info, site)
            mode = info.external_attr >> 16
            if mode & 0o111:
                pathlib.Path(target).chmod(mode & 0o777)
    with (out / "versions.txt").open("a") as f:
        f.write("wheel " + wheel.name + "\n")
EOF
}

precompile() {  # $1: out dir; pycs from a host CPython 3.11 are valid for the guest's 3.11
  if "$HOST_PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    log "precompiling .pyc files with the host's Python 3.11"
    "$HOST_PY" -m compileall -q -j0 "$1/sysroot/usr/lib/$PY" "$1/site-packages" >/dev/null || true
  fi
}

smoke_test() {  # $1: out dir
  log "smoke test under qemu-aarch64-static"
  env -i PATH=/usr/bin:/bin LANG=C.UTF-8 PYTHONNOUSERSITE=1 PYTHONPATH="$1/site-packages" \
    qemu-aarch64-static -L "$1/sysroot" "$1/sysroot/usr/bin/$PY" - "$1/lib/libtvm_runtime.so" <<'EOF' >&2
import ctypes, sys
import bz2, decimal, json, lzma, sqlite3, ssl, uuid, zlib  # noqa: F401
import numpy, onnxruntime, pydantic, tvm_ffi
import click, orjson, prometheus_client, starlette.applications, uvicorn  # noqa: F401
import h11, oras.container, oras.provider, requests  # noqa: F401
ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)
print(f"  ok: python {sys.version.split()[0]}, numpy {numpy.__version__}, pydantic "
      f"{pydantic.VERSION}, onnxruntime {onnxruntime.__version__}, tvm_ffi {tvm_ffi.__version__}"
      f", uvicorn {uvicorn.__version__}, orjson {orjson.__version__}")
EOF
}

install_result() {  # $1: out dir; replace the previous environment, stamp last
  local name
  rm -f "$HOME_DIR/stamp"
  for name in sysroot site-packages lib versions.txt; do
    rm -rf "${HOME_DIR:?}/$name"
    mv "$1/$name" "$HOME_DIR/$name"
  done
  printf '%s\n' "$KEY" >"$HOME_DIR/stamp"
}

main() {
  mkdir -p "$HOME_DIR"
  exec 9>"$HOME_DIR/.lock"
  flock 9
  KEY="$SUITE $PY debs: ${DEBS[*]} | wheels: ${WHEELS[*]} $TVM_WHEEL | serve: ${SERVE_WHEELS[*]} | script sha256:$(sha256sum "$SELF" | cut -d' ' -f1)"
  if [ -f "$HOME_DIR/stamp" ] && [ "$(cat "$HOME_DIR/stamp")" = "$KEY" ] \
      && [ -x "$HOME_DIR/sysroot/usr/bin/$PY" ]; then
    log "up to date: $HOME_DIR"
    return
  fi
  local start=$SECONDS
  ensure_host_tools
  pick_python
  WORK=$(mktemp -d "$HOME_DIR/.build-XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  download_debs "$WORK"
  unpack_debs "$WORK"
  fake_cpu_files "$WORK/out/sysroot"
  download_wheels "$WORK"
  unpack_wheels "$WORK"
  precompile "$WORK/out"
  smoke_test "$WORK/out"
  install_result "$WORK/out"
  rm -rf "$WORK"
  log "done in $((SECONDS - start)) s: $HOME_DIR ($(du -sh "$HOME_DIR" | cut -f1))"
}

main "$@"
