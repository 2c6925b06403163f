#!/usr/bin/env bash
# Checks the images scripts/build-images.sh built, with real containers (podman):
#   both: `--version` as uid 10001 with a read-only root filesystem, image user 10001:10001;
#   orlojd: answers GET /healthz with `ok` (memory store, read-only root fs, uid 10001);
#   orlojworker: answers /healthz too when TEST_DATABASE_URL gives it a Postgres to use.
# Env: ORLOJ_IMAGE_TAG / ORLOJ_IMAGE_PREFIX as in build-images.sh; ORLOJ_REQUIRE_WORKER=1 fails when the
# worker image is missing instead of skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TAG=${ORLOJ_IMAGE_TAG:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)}
PREFIX=${ORLOJ_IMAGE_PREFIX:-localhost/orloj-}
# shellcheck source=../.ci/containers.sh
source "$ROOT/.ci/containers.sh" >/dev/null

RUN=(podman run --rm --read-only --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges)
CONTAINERS=()
cleanup() {
  local c
  for c in "${CONTAINERS[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_healthz container url: polls until the body is `ok` (or {"status":"ok"}), the container exits, or 60 s pass.
wait_healthz() {
  local body i
  for i in $(seq 1 120); do
    body=$(python3 - "$2" <<'PY' 2>/dev/null || true
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
body = opener.open(sys.argv[1], timeout=2).read().decode().strip()
# orlojd answers {"status":"ok"}, orlojworker plain `ok`.
try:
    import json
    body = json.loads(body).get("status", body)
except (ValueError, AttributeError):
    pass
print(body)
PY
)
    if [ "$body" = ok ]; then return 0; fi
    if [ "$(podman inspect --format '{{.State.Running}}' "$1" 2>/dev/null)" != true ]; then
      echo "container exited before answering $2:" >&2; podman logs "$1" >&2 || true; return 1
    fi
    sleep 0.5
  done
  echo "no ok from $2" >&2; podman logs "$1" >&2 || true; return 1
}

check_common() { # image binary
  local user version
  user=$(podman image inspect --format '{{.Config.User}}' "$1")
  [ "$user" = "10001:10001" ] || { echo "FAIL: $1 runs as '$user', want 10001:10001" >&2; exit 1; }
  version=$("${RUN[@]}" --network none "$1" --version)
  grep -q "^$2 " <<<"$version" || { echo "FAIL: $1 --version printed '$version'" >&2; exit 1; }
  echo "ok: $1 --version: $version"
}

SERVER=${PREFIX}orlojd:$TAG
WORKER=${PREFIX}orlojworker:$TAG

check_common "$SERVER" orlojd
out=$("${RUN[@]}" --network none --entrypoint /usr/local/bin/orlojctl "$SERVER" --version)
echo "ok: orlojctl in $SERVER: $out"

port=$(free_port)
cid=$(podman run -d --read-only --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges \
  --network host "$SERVER" --addr "127.0.0.1:$port")
CONTAINERS+=("$cid")
wait_healthz "$cid" "http://127.0.0.1:$port/healthz"
echo "ok: orlojd in $SERVER answers /healthz with ok (read-only root fs, uid 10001)"
podman rm -f "$cid" >/dev/null

if ! podman image exists "$WORKER"; then
  if [ "${ORLOJ_REQUIRE_WORKER:-0}" = 1 ]; then echo "FAIL: $WORKER is missing" >&2; exit 1; fi
  echo "skip: $WORKER is missing (orlojworker binary not built yet)"
  exit 0
fi
check_common "$WORKER" orlojworker
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  echo "skip: orlojworker /healthz check needs TEST_DATABASE_URL"
  exit 0
fi
# A database of its own, so the worker's migrations do not touch the shared one.
db=orloj_image_check_$$
psql "$TEST_DATABASE_URL" -q -c "CREATE DATABASE $db" >/dev/null
drop_db() { psql "$TEST_DATABASE_URL" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; }
trap 'cleanup; drop_db' EXIT
port=$(free_port)
cid=$(podman run -d --read-only --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges \
  --network host -e ORLOJ_POSTGRES_DSN="${TEST_DATABASE_URL%/*}/$db" "$WORKER" \
  --worker-id image-check --storage-backend postgres --healthz-addr "127.0.0.1:$port")
CONTAINERS+=("$cid")
wait_healthz "$cid" "http://127.0.0.1:$port/healthz"
echo "ok: orlojworker in $WORKER answers /healthz with ok"
