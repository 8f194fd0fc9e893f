#!/usr/bin/env bash
# Build the three neofleet images without Docker: buildah from a debootstrapped Debian base,
# with wheels downloaded on the host. Idempotent; a rebuild with nothing changed is cached.
#
#   scripts/build-images.sh [--smoke] [--refresh-base] [--install-only] [runtime|compiler|operator ...]
#
# Users with Docker build the documented way (`docker build -f runtime-image/Dockerfile .`).
# This script builds the same images where there is no Docker engine and pip cannot reach
# PyPI from inside a build (see */Containerfile.local for why they differ from the
# Dockerfiles):
#   1. installs buildah, podman, debootstrap and runc with apt when missing (as root);
#   2. debootstraps Debian bookworm (minbase + python3 + ca-certificates, security updates
#      applied, docs/man/locales stripped) once, cached as a tarball under
#      ~/.cache/neofleet/images/, and imports it as localhost/neofleet-base:bookworm-<recipe>;
#   3. builds neofleet's wheel from the working tree and downloads the wheels of each extra
#      (runtime, compiler, operator) on the host, pinned to requirements.lock (the versions
#      the tests ran with, as pip constraints), binary wheels wherever they exist;
#   4. builds localhost/neofleet-{runtime,compiler,operator}:${NEOFLEET_IMAGE_TAG:-dev} with
#      `buildah build --isolation chroot --pull=never --layers` (overlay storage);
#   5. prints a table of image sizes, and last a JSON line {"images": {...}} on stdout.
# --smoke then runs scripts/smoke-images.sh (serve a bundle from the runtime image with
# podman and answer an inference; its JSON line follows).
#
# Logs go to stderr; stdout carries only the table and the JSON line(s).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CACHE=${NEOFLEET_IMAGES_CACHE:-$HOME/.cache/neofleet/images}
TAG=${NEOFLEET_IMAGE_TAG:-dev}
PY=${PYTHON:-$ROOT/.venv/bin/python}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BASE_PACKAGES=python3,ca-certificates
# Everything that decides the base image's content: a change makes a new base (and tag).
BASE_RECIPE="v1 $SUITE minbase $BASE_PACKAGES $MIRROR $SECURITY_MIRROR upgrade strip-docs"
BASE_KEY=$(printf '%s' "$BASE_RECIPE" | sha256sum | cut -c1-12)
BASE_IMAGE=localhost/neofleet-base:$SUITE-$BASE_KEY
STORE=(--storage-driver overlay)
ALL_IMAGES=(runtime compiler operator)
APT_TOOLS=(buildah podman debootstrap runc)

pip() {  # the host's pip, without the noise of index locations this host's pip.conf names
  "$PY" -m pip "$@" 2> >(grep -v '^WARNING: Location' >&2)
}
log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SMOKE=0 REFRESH_BASE=0 INSTALL_ONLY=0 IMAGES=()
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    --refresh-base) REFRESH_BASE=1 ;;
    --install-only) INSTALL_ONLY=1 ;;
    runtime|compiler|operator) IMAGES+=("$arg") ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument $arg (see --help)" ;;
  esac
done
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=("${ALL_IMAGES[@]}")

context_dir() {  # the Dockerfile's folder for an image name
  case $1 in runtime) echo runtime-image ;; compiler) echo compiler-image ;; operator) echo operator ;; esac
}

ensure_tools() {
  local missing=() pkg
  for pkg in "${APT_TOOLS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null || die "missing ${missing[*]}; install them as root (apt-get install ${missing[*]})"
    sudo="sudo -n"
  fi
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

build_base() {
  if [ "$REFRESH_BASE" -eq 0 ] && podman "${STORE[@]}" image exists "$BASE_IMAGE"; then
    log "base: $BASE_IMAGE (cached)"
    return
  fi
  local tarball="$CACHE/base-$BASE_KEY.tar"
  if [ "$REFRESH_BASE" -eq 1 ] || [ ! -f "$tarball" ]; then
    local start=$SECONDS rootfs
    rootfs=$(mktemp -d "$CACHE/.rootfs-XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" EXIT
    log "base: debootstrap --variant=minbase --include=$BASE_PACKAGES $SUITE ($MIRROR)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    # Like the official slim images: no recommends, no docs/man/locales from later installs.
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
      >"$rootfs/etc/apt/apt.conf.d/90neofleet-slim"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/locale/*' >"$rootfs/etc/dpkg/dpkg.cfg.d/90neofleet-slim"
    log "base: security and point-release updates (apt-get upgrade in the chroot)"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    chroot "$rootfs" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get -y -qq upgrade >&2
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/* \
      "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
      "$rootfs"/var/cache/debconf/*-old "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT
    log "base: rootfs $(du -h "$tarball" | cut -f1) in $((SECONDS - start)) s"
  fi
  log "base: podman import -> $BASE_IMAGE"
  podman "${STORE[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

source_digest() {  # what neofleet's wheel is built from (caches the wheel across runs)
  find src pyproject.toml README.md -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
      ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
}

neofleet_wheel() {  # sets NEOFLEET_WHEEL_DIR: a folder holding neofleet's wheel
  local digest dir tmp
  digest=$(source_digest)
  dir="$CACHE/wheels/neofleet-$digest"
  NEOFLEET_WHEEL_DIR=$dir
  if [ -f "$dir/.complete" ]; then
    log "wheels: neofleet (source $digest, cached)"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  tmp=$(mktemp -d)
  # A copy of the tree, so nothing is written into the working tree (build/, egg-info) and
  # edits made meanwhile do not slip into the wheel.
  tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - src pyproject.toml README.md | tar -C "$tmp" -xf -
  log "wheels: building neofleet's wheel (source $digest)"
  SOURCE_DATE_EPOCH=315532800 pip wheel -q --no-deps --no-build-isolation \
    --wheel-dir "$dir" "$tmp" >&2
  rm -rf "$tmp"
  touch "$dir/.complete"
  find "$CACHE/wheels" -mindepth 1 -maxdepth 1 -name 'neofleet-*' ! -path "$dir" -exec rm -rf {} +
}

constraints() {  # requirements.lock: images run what the tests ran
  grep -E '^[A-Za-z0-9_.-]+==[^ ]+$' "$ROOT/requirements.lock" >"$CACHE/constraints.txt"
}

extra_wheels() {  # $1: extra; sets EXTRA_DIR: the third-party wheels neofleet[$1] needs
  local extra=$1 wheel key dir
  wheel=$(echo "$NEOFLEET_WHEEL_DIR"/neofleet-*.whl)
  key=$( { "$PY" - "$wheel" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    print("\n".join(l for l in zf.read(meta).decode().splitlines() if l.startswith("Requires-Dist")))
EOF
    echo "$extra"; cat "$CACHE/constraints.txt"; } | sha256sum | cut -c1-16)
  dir="$CACHE/wheels/$extra-$key"
  EXTRA_DIR=$dir
  if [ -f "$dir/.complete" ]; then
    log "wheels: neofleet[$extra] dependencies (cached, $(ls "$dir"/*.whl | wc -l) wheels)"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  log "wheels: pip wheel neofleet[$extra] (binary wheels where they exist)"
  pip wheel -q --prefer-binary -c "$CACHE/constraints.txt" --wheel-dir "$dir" \
    "$wheel[$extra]" >&2
  rm -f "$dir"/neofleet-*.whl
  touch "$dir/.complete"
  find "$CACHE/wheels" -mindepth 1 -maxdepth 1 -name "$extra-*" ! -path "$dir" -exec rm -rf {} +
}

pip_tool() {  # pip's own wheel, run from the zip inside the builds
  local version
  version=$(pip --version | awk '{print $2}')
  PIP_TOOL_DIR="$CACHE/tools/pip-$version"
  if [ ! -f "$PIP_TOOL_DIR/.complete" ]; then
    mkdir -p "$PIP_TOOL_DIR"
    pip download -q --no-deps --only-binary=:all: -d "$PIP_TOOL_DIR" "pip==$version" >&2
    touch "$PIP_TOOL_DIR/.complete"
  fi
}

stage_context() {  # $1: image; prints the build context folder (hard links into the cache)
  local image=$1 ctx="$CACHE/context/$1" name
  rm -rf "$ctx"
  mkdir -p "$ctx/wheels" "$ctx/neofleet" "$ctx/tools"
  ln "$EXTRA_DIR"/*.whl "$ctx/wheels/"
  ln "$NEOFLEET_WHEEL_DIR"/neofleet-*.whl "$ctx/neofleet/"
  ln "$PIP_TOOL_DIR"/pip-*.whl "$ctx/tools/"
  if [ "$image" = compiler ]; then
    local home=${NEOFLEET_AARCH64_PYTHON:-$HOME/.cache/neofleet/aarch64-python}
    mkdir -p "$ctx/aarch64-python"
    for name in sysroot site-packages lib versions.txt stamp; do
      cp -al "$home/$name" "$ctx/aarch64-python/$name"
    done
  fi
  echo "$ctx"
}

build_image() {  # $1: runtime|compiler|operator
  local image=$1 ctx start=$SECONDS
  extra_wheels "$image"
  if [ "$image" = compiler ]; then
    log "compiler: the emulated aarch64 Python (scripts/setup-aarch64-python.sh)"
    PYTHON="$PY" bash scripts/setup-aarch64-python.sh
  fi
  ctx=$(stage_context "$image")
  log "$image: buildah build -f $(context_dir "$image")/Containerfile.local -> localhost/neofleet-$image:$TAG"
  buildah "${STORE[@]}" build --isolation chroot --pull=never --layers --quiet \
    --build-arg "BASE=$BASE_IMAGE" --label "io.neofleet.source=$(source_digest)" \
    -f "$ROOT/$(context_dir "$image")/Containerfile.local" \
    -t "localhost/neofleet-$image:$TAG" "$ctx" >&2
  BUILD_SECONDS[$image]=$((SECONDS - start))
  log "$image: built in ${BUILD_SECONDS[$image]} s"
}

report() {
  local image ref size id json="" sep=""
  printf '%-46s %10s %8s  %s\n' IMAGE SIZE_MB BUILD_S ID
  for image in "${IMAGES[@]}" base; do
    if [ "$image" = base ]; then ref=$BASE_IMAGE; else ref=localhost/neofleet-$image:$TAG; fi
    size=$(podman "${STORE[@]}" image inspect --format '{{.Size}}' "$ref")
    id=$(podman "${STORE[@]}" image inspect --format '{{.Id}}' "$ref" | cut -c1-12)
    printf '%-46s %10s %8s  %s\n' "$ref" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }')" \
      "${BUILD_SECONDS[$image]:--}" "$id"
    json+="$sep\"$image\": {\"ref\": \"$ref\", \"id\": \"$id\", \"size_bytes\": $size, \"build_s\": ${BUILD_SECONDS[$image]:-null}}"
    sep=", "
  done
  echo "{\"images\": {$json}, \"total_s\": $((SECONDS - START))}"
}

START=$SECONDS
ensure_tools
[ "$INSTALL_ONLY" -eq 1 ] && { log "buildah, podman, debootstrap, runc present"; exit 0; }
[ -x "$PY" ] || die "no python at $PY: run scripts/install.sh (or set PYTHON)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
declare -A BUILD_SECONDS=([base]=0)
base_start=$SECONDS
build_base
BUILD_SECONDS[base]=$((SECONDS - base_start))
neofleet_wheel
constraints
pip_tool
for image in "${IMAGES[@]}"; do
  build_image "$image"
done
report
if [ "$SMOKE" -eq 1 ]; then
  flock -u 9
  NEOFLEET_IMAGE_TAG=$TAG PYTHON="$PY" bash scripts/smoke-images.sh "${IMAGES[@]}"
fi
