#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2 from Debian's
# `kubernetes` source package with Debian's Go, and cache them.
#
#   build_control_plane.sh CACHE_ROOT      prints the folder holding the three binaries
#
# Recipe and fixes: shared/notes/control-plane.md. Idempotent; with the binaries cached it
# only checks the apt packages and the cache key (a second or two). The key is the Debian
# source version + the Go version + the reflect2 version + this script's sha256, so any of
# them changing rebuilds. Progress goes to stderr; only the binary folder goes to stdout.
set -euo pipefail

CACHE_ROOT=${1:?usage: build_control_plane.sh CACHE_ROOT}
SCRIPT_SHA=$(sha256sum "$0" | cut -c1-16)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log() { echo "[control-plane] $*" >&2; }

# --- apt: a deb-src entry on the mirror apt already uses, Go, reflect2, etcd -------------
SRC_LIST=/etc/apt/sources.list.d/neofleet-deb-src.sources
if [ ! -f "$SRC_LIST" ]; then
  mirror=$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
              grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } \
            | grep -E '/debian/?$' | head -1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  log "adding a deb-src entry for bookworm main on $mirror"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: %s\n' \
    "$mirror" /usr/share/keyrings/debian-archive-keyring.gpg | $SUDO tee "$SRC_LIST" >/dev/null
  $SUDO apt-get update -qq
fi
PACKAGES=(golang-go golang-github-modern-go-reflect2-dev etcd-server dpkg-dev openssl zstd)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

SRC_VERSION=$(apt-cache showsrc kubernetes | awk '/^Version:/ {print $2; exit}')
[ -n "$SRC_VERSION" ] || { log "apt has no source package 'kubernetes' (deb-src missing?)"; exit 3; }
GO_VERSION=$(go version | awk '{print $3}')
R2_VERSION=$(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)
KEY=$(printf '%s\n' "$SRC_VERSION" "$GO_VERSION" "$R2_VERSION" "$SCRIPT_SHA" | sha256sum | cut -c1-16)
BIN="$CACHE_ROOT/control-plane-$KEY"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler)
if [ -x "$BIN/kube-scheduler" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  echo "$BIN"
  exit 0
fi

# --- cold build ---------------------------------------------------------------------------
log "building kubernetes $SRC_VERSION with $GO_VERSION, reflect2 $R2_VERSION (about 5 minutes)"
mkdir -p "$CACHE_ROOT"
WORK=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
apt-get source --download-only kubernetes >/dev/null 2>&1 || apt-get source --download-only kubernetes >&2
dpkg-source --no-check -x ./kubernetes_*.dsc src >/dev/null
cd src

# Fix A: the vendored reflect2 makes the apiserver segfault on the first custom-resource
# write with Go 1.19; Debian's packaged reflect2 does not.
R2_DIR=$(dpkg -L golang-github-modern-go-reflect2-dev | grep -E '/reflect2/[^/]+\.go$' | head -1 | xargs dirname)
find vendor/github.com/modern-go/reflect2 -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
find "$R2_DIR" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -exec cp {} vendor/github.com/modern-go/reflect2/ \;

# GOPATH mode (module mode fails on this tree).
export GOPATH="$WORK/gopath" GO111MODULE=off GOPROXY=off CGO_ENABLED=0 GOFLAGS=
export GOCACHE="${GOCACHE:-$CACHE_ROOT/go-build}"
mkdir -p "$GOPATH/src/k8s.io"
ln -s "$WORK/src" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

# Fix B: pkg/generated/openapi/zz_generated.openapi.go is not in the tarball; generate it
# as the upstream Makefile does, from every package tagged +k8s:openapi-gen=.
log "generating pkg/generated/openapi"
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
# The same package list as build/root/Makefile.generated_files: every .go file outside
# ./_*, ./.* and ./vendor (staging named as vendor), with a `// +k8s:` tag line, that asks
# for openapi-gen, minus code-generator and sample-apiserver (they have their own).
INPUT_DIRS=$(find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \
               -o -type f -name '*.go' -print \
             | sed -e 's|^\./staging/src|vendor|' -e 's|^\./||' \
             | { xargs grep -l --color=never '^// *+k8s:' || true; } \
             | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' \
             | { xargs grep -l --color=never '+k8s:openapi-gen=' || true; } \
             | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' \
             | paste -sd, -)
"$WORK/openapi-gen" --input-dirs "$INPUT_DIRS" \
  --output-base "$GOPATH/src" --output-package k8s.io/kubernetes/pkg/generated/openapi \
  --output-file-base zz_generated.openapi \
  --go-header-file vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
  --report-filename "$WORK/violations.report" >&2
# Upstream's own check that the generated code is the one it ships with.
if ! diff <(LC_ALL=C sort "$WORK/violations.report") \
          <(LC_ALL=C sort api/api-rules/violation_exceptions.list) >&2; then
  log "the generated OpenAPI code differs from upstream's (violation report above)"
  exit 4
fi

log "go build ${BINARIES[*]}"
PKG=k8s.io/kubernetes/vendor/k8s.io/component-base/version
LDFLAGS="-s -w -X $PKG.gitVersion=v1.20.2 -X $PKG.gitMajor=1 -X $PKG.gitMinor=20"
LDFLAGS+=" -X $PKG.gitTreeState=clean -X $PKG.buildDate=1970-01-01T00:00:00Z"
mkdir -p "$WORK/out"
go build -ldflags "$LDFLAGS" -o "$WORK/out/" ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler
for b in "${BINARIES[@]}"; do "$WORK/out/$b" --version >&2; done

rm -rf "$BIN.tmp" && mkdir -p "$BIN.tmp"
cp "${BINARIES[@]/#/$WORK/out/}" "$BIN.tmp/"
printf 'kubernetes %s\ngo %s\nreflect2 %s\nscript %s\n' "$SRC_VERSION" "$GO_VERSION" "$R2_VERSION" "$SCRIPT_SHA" > "$BIN.tmp/KEY"
mv "$BIN.tmp" "$BIN"      # atomic: a half-built cache entry is never used
find "$CACHE_ROOT" -maxdepth 1 -name 'control-plane-*' ! -name "control-plane-$KEY" \
  -exec rm -rf {} +        # entries for older keys
log "cached in $BIN"
echo "$BIN"
