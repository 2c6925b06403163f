#!/usr/bin/env bash
# Builds the orlojd and orlojworker images on a machine that cannot pull anything (see TESTING.md):
# FROM scratch plus the binaries and, when they are dynamically linked, the exact shared libraries
# `ldd` names, copied from this host. The images match the Dockerfile's runtime contract (uid/gid
# 10001, no writable root filesystem needed, entrypoint = the binary); users build the Dockerfile.
#
# Env:
#   ORLOJ_BIN_DIR      directory with prebuilt orlojd, orlojctl and (optionally) orlojworker.
#                      Default target/release; when orlojd is absent there, runs
#                      `cargo build --release -p orloj-bins` first.
#   ORLOJ_IMAGE_TAG    image tag (default: the workspace version).
#   ORLOJ_IMAGE_PREFIX image name prefix (default localhost/orloj-).
#   ORLOJ_REQUIRE_WORKER=1  fail instead of skipping when orlojworker is missing.
# Produces ${ORLOJ_IMAGE_PREFIX}orlojd:${ORLOJ_IMAGE_TAG} and ${ORLOJ_IMAGE_PREFIX}orlojworker:${ORLOJ_IMAGE_TAG}.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TAG=${ORLOJ_IMAGE_TAG:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)}
PREFIX=${ORLOJ_IMAGE_PREFIX:-localhost/orloj-}

if [ -n "${ORLOJ_BIN_DIR:-}" ]; then
  BIN_DIR=$(cd "$ORLOJ_BIN_DIR" && pwd)
  [ -x "$BIN_DIR/orlojd" ] || { echo "ORLOJ_BIN_DIR=$BIN_DIR has no orlojd binary" >&2; exit 1; }
else
  BIN_DIR=$ROOT/target/release
  if [ ! -x "$BIN_DIR/orlojd" ]; then
    echo "== no prebuilt binaries in $BIN_DIR: cargo build --release -p orloj-bins"
    cargo build --release -p orloj-bins
  fi
fi
echo "== binaries from $BIN_DIR"

# podman/buildah with runc, cgroupfs and vfs (installs them when missing).
# shellcheck source=../.ci/containers.sh
source "$ROOT/.ci/containers.sh"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

# Copies the shared libraries (and the loader) a binary needs into rootfs, at the paths ldd reports.
copy_libs() { # binary rootfs
  local out path
  out=$(ldd "$1" 2>&1 || true)
  if grep -qE 'not a dynamic executable|statically linked' <<<"$out"; then
    return 0
  fi
  for path in $(grep -oE '/[^ ]+' <<<"$out" | grep -E '\.so' | sort -u); do
    mkdir -p "$2$(dirname "$path")"
    cp -L "$path" "$2$path"
  done
}

# build_image name entrypoint-binary [more binaries...]
build_image() {
  local name=$1; shift
  local ctx=$STAGE/$name rootfs=$STAGE/$name/rootfs bin
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  for bin in "$@"; do
    install -m 755 "$BIN_DIR/$bin" "$rootfs/usr/local/bin/$bin"
    copy_libs "$BIN_DIR/$bin" "$rootfs"
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\norloj:x:10001:10001:orloj:/nonexistent:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\norloj:x:10001:\n' >"$rootfs/etc/group"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  fi
  cat >"$ctx/Containerfile" <<CF
FROM scratch
COPY rootfs/ /
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/$1"]
CF
  echo "== building ${PREFIX}${name}:${TAG}"
  buildah bud --quiet --isolation chroot --layers=false \
    --label org.opencontainers.image.title="$name" \
    --label org.opencontainers.image.version="$TAG" \
    -t "${PREFIX}${name}:${TAG}" "$ctx" >/dev/null
  echo "   $(podman image inspect --format '{{.Id}} {{.Size}} bytes' "${PREFIX}${name}:${TAG}")"
}

build_image orlojd orlojd orlojctl
if [ -x "$BIN_DIR/orlojworker" ]; then
  build_image orlojworker orlojworker
elif [ "${ORLOJ_REQUIRE_WORKER:-0}" = 1 ]; then
  echo "orlojworker binary not built yet ($BIN_DIR/orlojworker missing) and ORLOJ_REQUIRE_WORKER=1" >&2
  exit 1
else
  echo "== skipping the orlojworker image: orlojworker binary not built yet ($BIN_DIR/orlojworker missing)"
fi
