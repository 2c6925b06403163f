#!/usr/bin/env bash
# Daemonless containers for the container tool executor tests (see TESTING.md "Containers").
# Usage: source .ci/containers.sh
#   Installs podman, buildah, runc and busybox-static when missing (apt-get), writes
#   containers.conf/storage.conf (runc, cgroupfs, vfs) and exports CONTAINERS_CONF,
#   CONTAINERS_STORAGE_CONF and ORLOJ_TOOL_PROBE_IMAGE, then builds the local probe image
#   (FROM scratch + busybox + a tiny curl stand-in) when it is absent. Safe to source twice.
# The probe image has /bin/busybox, /bin/sh (busybox) and /bin/curl (a shell shim over
# `busybox wget` that understands the flags of the container executor's request script).

orloj_containers_setup() {
  local missing=() bin pkg pair
  for pair in podman:podman buildah:buildah runc:runc busybox:busybox-static; do
    bin="${pair%%:*}"
    pkg="${pair#*:}"
    command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== containers: installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >/dev/null || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null || return 1
  fi

  local dir="${ORLOJ_CONTAINERS_DIR:-${TMPDIR:-/tmp}/orloj-containers}"
  mkdir -p "$dir/probe" || return 1
  printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
    >"$dir/containers.conf"
  printf '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n' \
    >"$dir/storage.conf"
  export CONTAINERS_CONF="$dir/containers.conf"
  export CONTAINERS_STORAGE_CONF="$dir/storage.conf"
  export ORLOJ_TOOL_PROBE_IMAGE="${ORLOJ_TOOL_PROBE_IMAGE:-localhost/orloj-tool-probe:1}"

  if podman image exists "$ORLOJ_TOOL_PROBE_IMAGE" 2>/dev/null; then
    echo "== containers: image $ORLOJ_TOOL_PROBE_IMAGE present"
    return 0
  fi
  local busybox
  busybox="$(command -v busybox)" || return 1
  cp "$busybox" "$dir/probe/busybox" || return 1
  cat >"$dir/probe/curl" <<'SHIM'
#!/bin/sh
# curl stand-in: -sS/--fail-with-body are implied, -X is ignored (POST comes from the body),
# -H becomes --header, --data-binary @- posts stdin.
n=$#
url=
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1))
  case "$a" in
    -H) set -- "$@" --header "$1"; shift; n=$((n - 1)) ;;
    -X) shift; n=$((n - 1)) ;;
    --data-binary) shift; n=$((n - 1)); set -- "$@" --post-file /dev/stdin ;;
    -*) ;;
    *) url=$a ;;
  esac
done
exec /bin/busybox wget -q -O - "$@" "$url"
SHIM
  chmod 755 "$dir/probe/busybox" "$dir/probe/curl"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\nCOPY curl /bin/curl\nENTRYPOINT ["/bin/busybox"]\n' \
    >"$dir/probe/Containerfile"
  echo "== containers: building $ORLOJ_TOOL_PROBE_IMAGE"
  buildah bud --quiet --isolation chroot -t "$ORLOJ_TOOL_PROBE_IMAGE" "$dir/probe" >/dev/null || return 1
}

orloj_containers_setup || { echo "containers setup failed" >&2; return 1 2>/dev/null || exit 1; }
