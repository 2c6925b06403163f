#!/usr/bin/env bash
# Deployment rehearsal: what an operator does after `helm upgrade --install orloj ./charts/orloj`,
# played on this machine with the real binaries and exactly the args/env the chart renders.
#
#   1. render charts/orloj with the default values (helm from .tools/, installed like chart-test.sh);
#   2. take the server and worker containers' args and env from the render (Secrets resolved from
#      the render, $(NAME) expanded, POD_NAME = a pod name) and swap the in-cluster addresses for
#      loopback: --addr/--healthz-addr -> 127.0.0.1:<free port>, nats://orloj-nats:4222 -> NATS,
#      ORLOJ_POSTGRES_DSN -> a fresh database;
#   3. start one orlojd and as many orlojworkers as the chart's worker replicas (2);
#   4. the operator's checks: /healthz, native setup with the chart's setup token, `orlojctl auth
#      login`, Ready workers (`orlojctl get workers`), `orlojctl apply -f examples/blueprints/pipeline/
#      --run` to Succeeded;
#   5. scale the workers from 2 to 3 processes: the third joins Ready, the first two keep their PIDs
#      and stay Ready, and a new task still succeeds.
#
# Usage: scripts/rehearse.sh
# Env:   ORLOJ_BIN_DIR      where orlojd, orlojworker, orlojctl are (default target/debug; built with
#                           cargo when missing there)
#        TEST_DATABASE_URL, TEST_NATS_URL   use these services (default: start them with .ci/services.sh)
#        REHEARSAL_KEEP=1   keep the work directory (logs, render) after a successful run
#        REHEARSAL_NAMESPACE   namespace of the blueprint (default: `default` with services of its own;
#                           a unique one with TEST_* services, since agent-message dedupe ids are
#                           <namespace>/<task>/<attempt>/... and a shared NATS remembers them for 2m)
# Exit codes: 0 all checks passed, 1 a check failed, 3 helm could not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELM=$ROOT/.tools/helm/helm
RELEASE=orloj
BIN_DIR=${ORLOJ_BIN_DIR:-$ROOT/target/debug}
WORK=$(mktemp -d /tmp/orloj-rehearsal.XXXX)
PIDS=()
DB_NAME=""
STARTED_SERVICES=0
OK=0

say() { echo "rehearsal: $*"; }
fail() {
  echo "rehearsal: FAILED: $*" >&2
  exit 1
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$DB_NAME" ]; then
    psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $DB_NAME" >/dev/null 2>&1 || true
  fi
  if [ "$STARTED_SERVICES" = 1 ]; then
    orloj_services_stop || true
    rm -rf "${ORLOJ_SERVICES_DIR:?}"
  fi
  if [ "$OK" = 1 ] && [ -z "${REHEARSAL_KEEP:-}" ]; then
    rm -rf "$WORK"
  else
    echo "rehearsal: logs and render kept in $WORK" >&2
  fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# --- binaries and helm -------------------------------------------------------------------------
for b in orlojd orlojworker orlojctl; do
  if [ ! -x "$BIN_DIR/$b" ]; then
    [ -z "${ORLOJ_BIN_DIR:-}" ] || fail "$BIN_DIR/$b is missing (ORLOJ_BIN_DIR)"
    say "building orlojd, orlojworker and orlojctl (cargo build -p orloj-bins)"
    cargo build -q -p orloj-bins --bin orlojd --bin orlojworker --bin orlojctl
    break
  fi
done
bash scripts/chart-test.sh --tools-only >&2 || exit $?
PY=$ROOT/.ci/venv/bin/python # has PyYAML (kubernetes-validate brings it)

# --- services ----------------------------------------------------------------------------------
if [ -z "${TEST_DATABASE_URL:-}" ] || [ -z "${TEST_NATS_URL:-}" ]; then
  say "starting Postgres and NATS (.ci/services.sh)"
  # shellcheck source=/dev/null
  source .ci/services.sh
  set -euo pipefail
  STARTED_SERVICES=1
fi
ADMIN_URL=$TEST_DATABASE_URL
if [ "$STARTED_SERVICES" = 1 ]; then
  NAMESPACE=${REHEARSAL_NAMESPACE:-default}
else
  NAMESPACE=${REHEARSAL_NAMESPACE:-rehearsal-$$-$(date +%s)}
fi
NATS_URL=$TEST_NATS_URL
DB_NAME="orloj_rehearsal_$$_$(date +%s)"
psql "$ADMIN_URL" -q -c "CREATE DATABASE $DB_NAME" >/dev/null
DSN="${ADMIN_URL%/*}/$DB_NAME"
say "postgres database $DB_NAME, nats $NATS_URL, binaries from $BIN_DIR, work dir $WORK"

# --- render and extract ------------------------------------------------------------------------
"$HELM" template "$RELEASE" charts/orloj --namespace orloj >"$WORK/render.yaml"
say "rendered charts/orloj with the default values ($WORK/render.yaml)"

# extract DEPLOYMENT CONTAINER PORT POD_NAME OUT: writes OUT.args (one per line) and OUT.env (KEY=VALUE).
extract() {
  "$PY" - "$WORK/render.yaml" "$@" "$DSN" "$NATS_URL" <<'PY'
import base64, json, sys, yaml
render, deployment, container, port, pod, out, dsn, nats = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(render)) if isinstance(d, dict)]
def find(kind, name):
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    sys.exit(f"the render has no {kind} {name}")
dep = find("Deployment", deployment)
c = next((c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == container), None)
if c is None:
    sys.exit(f"Deployment {deployment} has no container {container}")
env = []
def expand(text):
    for k, v in env:
        text = text.replace(f"$({k})", v)
    return text
def setenv(k, v):
    env[:] = [(n, x) for n, x in env if n != k] + [(k, v)]
for src in c.get("envFrom") or []:
    for k, v in find("ConfigMap", src["configMapRef"]["name"]).get("data", {}).items():
        setenv(k, v)
for e in c.get("env") or []:
    name, vf = e["name"], e.get("valueFrom") or {}
    if "value" in e:
        value = expand(e["value"])
    elif vf.get("fieldRef", {}).get("fieldPath") == "metadata.name":
        value = pod
    elif "secretKeyRef" in vf:
        ref = vf["secretKeyRef"]
        secret = find("Secret", ref["name"])
        if ref["key"] in (secret.get("stringData") or {}):
            value = secret["stringData"][ref["key"]]
        elif ref["key"] in (secret.get("data") or {}):
            value = base64.b64decode(secret["data"][ref["key"]]).decode()
        elif ref.get("optional"):
            continue
        else:
            sys.exit(f"env {name}: Secret {ref['name']} has no key {ref['key']}")
    else:
        sys.exit(f"env {name}: unsupported source {json.dumps(e)}")
    if name == "ORLOJ_POSTGRES_DSN":
        value = dsn
    setenv(name, value)
args = []
for a in c.get("args") or []:
    flag, eq, value = a.partition("=")
    if eq and flag in ("--addr", "--healthz-addr"):
        a = f"{flag}=127.0.0.1:{port}"
    elif eq and value.startswith("nats://"):
        a = f"{flag}={nats}"
    args.append(expand(a))
for k, v in env:
    if "\n" in v:
        sys.exit(f"env {k}: multi-line values are not supported here")
open(out + ".args", "w").write("".join(a + "\n" for a in args))
open(out + ".env", "w").write("".join(f"{k}={v}\n" for k, v in env))
PY
}

worker_replicas=$("$PY" - "$WORK/render.yaml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if isinstance(d, dict) and d.get("kind") == "Deployment" and d["metadata"]["name"] == "orloj-worker":
        print(d["spec"].get("replicas", 1))
PY
)
[ "$worker_replicas" = 2 ] || fail "expected the default render to run 2 workers, it runs ${worker_replicas:-none}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME BINARY CONFIG: starts BINARY with exactly CONFIG.args and CONFIG.env (nothing else
# from this shell's environment, like a container), logging to NAME.log; sets LAST_PID.
start() {
  local name=$1 bin=$2 cfg=$3 args envs
  mapfile -t args <"$cfg.args"
  mapfile -t envs <"$cfg.env"
  {
    echo "$bin ${args[*]}"
    echo "env: $(cut -d= -f1 <"$cfg.env" | tr '\n' ' ')"
  } >"$WORK/$name.cmd"
  env -i "${envs[@]}" "$bin" "${args[@]}" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  say "started $name (pid $LAST_PID): $(basename "$bin") ${args[*]}"
}

# wait_healthz NAME PID PORT
wait_healthz() {
  local name=$1 pid=$2 port=$3 i
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$WORK/$name.log" >&2; fail "$name exited before answering /healthz"; }
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  tail -n 30 "$WORK/$name.log" >&2
  fail "$name did not answer /healthz on port $port"
}

# --- orlojd ------------------------------------------------------------------------------------
SERVER_PORT=$(free_port)
extract "$RELEASE-server" server "$SERVER_PORT" "$RELEASE-server-rehearsal" "$WORK/server"
start orlojd "$BIN_DIR/orlojd" "$WORK/server"
SERVER_PID=$LAST_PID
wait_healthz orlojd "$SERVER_PID" "$SERVER_PORT"
SERVER=http://127.0.0.1:$SERVER_PORT
health=$(curl -fsS "$SERVER/healthz")
say "check: curl $SERVER/healthz -> $health"

# --- workers -----------------------------------------------------------------------------------
WORKER_NAMES=()
WORKER_PIDS=()
start_worker() { # INDEX
  local i=$1 port pod
  port=$(free_port)
  # Pod names as a Deployment makes them: <deployment>-<replicaset hash>-<suffix>.
  pod="$RELEASE-worker-5d8f7c9b4-r$i$(printf '%04x' $((RANDOM)))"
  extract "$RELEASE-worker" worker "$port" "$pod" "$WORK/worker-$i"
  start "worker-$i" "$BIN_DIR/orlojworker" "$WORK/worker-$i"
  WORKER_NAMES+=("$pod")
  WORKER_PIDS+=("$LAST_PID")
  wait_healthz "worker-$i" "$LAST_PID" "$port"
}
for i in $(seq 1 "$worker_replicas"); do start_worker "$i"; done

# --- native auth setup and login ---------------------------------------------------------------
SETUP_TOKEN=$(sed -n 's/^ORLOJ_SETUP_TOKEN=//p' "$WORK/server.env")
[ -n "$SETUP_TOKEN" ] || fail "the rendered server env has no ORLOJ_SETUP_TOKEN"
grep -qx 'ORLOJ_AUTH_MODE=native' "$WORK/server.env" || fail "the chart does not render ORLOJ_AUTH_MODE=native by default"
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
code=$(curl -sS -o "$WORK/setup.json" -w '%{http_code}' -X POST "$SERVER/v1/auth/setup" \
  -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\",\"setup_token\":\"$SETUP_TOKEN\"}")
[ "$code" = 201 ] || fail "POST /v1/auth/setup with the chart's setup token: HTTP $code $(cat "$WORK/setup.json")"
say "check: native setup with the chart's setup token -> HTTP $code"

export ORLOJCTL_CONFIG=$WORK/orlojctl.json
unset ORLOJ_API_TOKEN ORLOJCTL_API_TOKEN ORLOJ_SERVER
ctl() { "$BIN_DIR/orlojctl" --server "$SERVER" "$@"; }
ctl get agents >/dev/null 2>&1 && fail "the API answered without a token (auth mode is not enforced)"
out=$(ctl auth login -u admin -p "$PASSWORD") || fail "orlojctl auth login: $out"
say "check: orlojctl auth login -> $out"

# --- workers Ready ----------------------------------------------------------------------------
# ready_names: the names of Ready workers, one per line.
ready_names() {
  ctl get workers -o json | jq -r '(.items // .)[] | select(.status.phase == "Ready") | .metadata.name'
}
wait_ready() { # NAME...
  local i name ready missing
  for i in $(seq 1 150); do
    ready=$(ready_names 2>/dev/null || true)
    missing=""
    for name in "$@"; do grep -qx "$name" <<<"$ready" || missing="$missing $name"; done
    [ -z "$missing" ] && return 0
    sleep 0.4
  done
  ctl get workers >&2 || true
  fail "workers not Ready:$missing"
}
wait_ready "${WORKER_NAMES[@]}"
say "check: orlojctl get workers"
ctl get workers

# --- the pipeline blueprint to Succeeded ------------------------------------------------------
RUNS=0
run_pipeline() { # LABEL
  local out task phase
  RUNS=$((RUNS + 1))
  say "orlojctl -n $NAMESPACE apply -f examples/blueprints/pipeline/ --run ($1; full output in $WORK/apply-$RUNS.log)"
  out=$(ctl -n "$NAMESPACE" apply -f examples/blueprints/pipeline/ --run --timeout 3m --poll 1s 2>&1) \
    || { echo "$out" >&2; fail "$1: orlojctl apply -f examples/blueprints/pipeline/ --run failed"; }
  echo "$out" >"$WORK/apply-$RUNS.log"
  # The applied objects and the task's phases, without the per-agent trace and the output.
  sed -n '/^output:/q; /\] /d; /^task_/d; p' <<<"$out" | grep -v ' task_start: \| task_summary: ' || true
  # The task applied (or its rerun) is the last task/ name in the output.
  task=$(grep -o 'task/pipeline-brief[A-Za-z0-9-]*' <<<"$out" | tail -n 1)
  [ -n "$task" ] || fail "$1: no task in the apply output"
  phase=$(ctl get task "${task#task/}" -n "$NAMESPACE" -o json | jq -r '.status.phase')
  [ "$phase" = Succeeded ] || fail "$1: $task ended $phase"
  say "check: $1: $task Succeeded"
}
run_pipeline "pipeline blueprint"

# --- scale the workers 2 -> 3 -----------------------------------------------------------------
BEFORE_PIDS=("${WORKER_PIDS[@]}")
say "scaling the workers from $worker_replicas to $((worker_replicas + 1)) (like kubectl scale deployment/$RELEASE-worker --replicas=$((worker_replicas + 1)))"
start_worker $((worker_replicas + 1))
wait_ready "${WORKER_NAMES[@]}"
for i in "${!BEFORE_PIDS[@]}"; do
  pid=${BEFORE_PIDS[$i]}
  kill -0 "$pid" 2>/dev/null || fail "worker-$((i + 1)) (pid $pid) is gone after the scale-up"
  [ "${WORKER_PIDS[$i]}" = "$pid" ] || fail "worker-$((i + 1)) was restarted"
  # Restart counters of a pod: a process restarted by this script would have a new PID.
done
grep -q . <(ready_names | grep -x "${WORKER_NAMES[0]}") || fail "worker-1 is not Ready after the scale-up"
grep -q . <(ready_names | grep -x "${WORKER_NAMES[1]}") || fail "worker-2 is not Ready after the scale-up"
say "check: worker-3 ${WORKER_NAMES[2]} joined Ready; worker-1 and worker-2 kept pids ${BEFORE_PIDS[*]} and stay Ready"
ctl get workers
run_pipeline "after the scale-up"
kill -0 "$SERVER_PID" 2>/dev/null || fail "orlojd exited"

OK=1
say "all checks passed"
