{{/*
Expand the name of the chart.
*/}}
{{- define "dronedelivery.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name (truncated to 63 chars: DNS label limit).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "dronedelivery.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The full name with a suffix, the full name shortened so that the result stays
a DNS label (63 characters). Takes (dict "root" $ "suffix" "worker").
*/}}
{{- define "dronedelivery.suffixedName" -}}
{{- $max := sub 62 (len .suffix) | int }}
{{- printf "%s-%s" (include "dronedelivery.fullname" .root | trunc $max | trimSuffix "-") .suffix }}
{{- end }}

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "dronedelivery.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every object; objects of one role add their component
(dronedelivery.componentLabels).
*/}}
{{- define "dronedelivery.labels" -}}
helm.sh/chart: {{ include "dronedelivery.chart" . }}
{{ include "dronedelivery.baseSelectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dronedelivery
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the objects of one role. Takes (dict "root" $ "component" "gateway").
*/}}
{{- define "dronedelivery.componentLabels" -}}
{{ include "dronedelivery.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of the release, without the component.
*/}}
{{- define "dronedelivery.baseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "dronedelivery.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of one role's pods (immutable on Deployments and StatefulSets:
never add version-like labels here). app.kubernetes.io/component is
gateway | worker in mode split and engine in mode all.
Takes (dict "root" $ "component" "worker").
*/}}
{{- define "dronedelivery.selectorLabels" -}}
{{ include "dronedelivery.baseSelectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The workloads of the release, as a YAML list (read with fromYamlArray):
  role       DD_ROLE of the pods (gateway | worker | all)
  component  app.kubernetes.io/component (gateway | worker | engine)
  kind       Deployment | StatefulSet
  name       the workload's name (also its HPA, PDB, NetworkPolicy, ScaledObject)
  headless   the role's headless Service (metrics of every pod; the
             StatefulSet's serviceName in mode all)
  block      the values block with its replicas, resources, autoscaling, pdb ...
  public     whether the public Service (and the Ingress) reach these pods
Mode all runs one StatefulSet of role all, configured by the `worker` block and
named like the release (the 0.1 chart's names, upgraded in place). Workers need
no stable identity (partitions are leased, drones pooled), so in mode split
they are a Deployment.
*/}}
{{- define "dronedelivery.roles" -}}
{{- if eq .Values.mode "split" }}
- role: gateway
  component: gateway
  kind: Deployment
  name: {{ include "dronedelivery.suffixedName" (dict "root" . "suffix" "gateway") }}
  block: gateway
  public: true
- role: worker
  component: worker
  kind: Deployment
  name: {{ include "dronedelivery.suffixedName" (dict "root" . "suffix" "worker") }}
  headless: {{ include "dronedelivery.suffixedName" (dict "root" . "suffix" "worker-headless") }}
  block: worker
  public: false
{{- else }}
- role: all
  component: engine
  kind: StatefulSet
  name: {{ include "dronedelivery.fullname" . }}
  headless: {{ include "dronedelivery.suffixedName" (dict "root" . "suffix" "headless") }}
  block: worker
  public: true
{{- end }}
{{- end }}

{{/*
Name of the service account to use.
*/}}
{{- define "dronedelivery.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dronedelivery.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference: digest wins over tag; tag defaults to appVersion.
*/}}
{{- define "dronedelivery.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Name of the SecretProviderClass (Key Vault through the Secrets Store CSI driver).
*/}}
{{- define "dronedelivery.secretProviderClassName" -}}
{{- include "dronedelivery.suffixedName" (dict "root" . "suffix" "keyvault") }}
{{- end }}

{{/*
Client id of the workload identity (Key Vault CSI: its own clientId wins).
*/}}
{{- define "dronedelivery.keyVaultClientId" -}}
{{- .Values.secrets.keyVault.clientId | default .Values.workloadIdentity.clientId }}
{{- end }}

{{/*
Whether a backend is in use (for NetworkPolicy egress). Returns "true" or "".
*/}}
{{- define "dronedelivery.usesRedis" -}}
{{- $s := .Values.secrets -}}
{{- if or .Values.networkPolicy.egress.redis.enabled (eq .Values.config.queue "redis-streams") (and $s.existingSecret $s.keys.redisUrl) }}true{{ end }}
{{- end }}
{{- define "dronedelivery.usesMongodb" -}}
{{- $s := .Values.secrets -}}
{{- if or .Values.networkPolicy.egress.mongodb.enabled (and $s.existingSecret $s.keys.mongodbUri) }}true{{ end }}
{{- end }}
{{- define "dronedelivery.usesServicebus" -}}
{{- if or .Values.networkPolicy.egress.servicebus.enabled (eq .Values.config.queue "servicebus") }}true{{ end }}
{{- end }}
{{- define "dronedelivery.usesIssuer" -}}
{{- if or .Values.networkPolicy.egress.issuer.enabled (eq .Values.config.auth.mode "jwt") }}true{{ end }}
{{- end }}

{{/*
Configuration checks that a JSON schema cannot express. Included once, by
service.yaml (the public Service is always rendered).
*/}}
{{- define "dronedelivery.validate" -}}
{{- $s := .Values.secrets -}}
{{- $w := .Values.worker -}}
{{- $g := .Values.gateway -}}
{{- $q := .Values.config.queue -}}
{{- if eq $q "redis-streams" }}
{{- if not (and $s.existingSecret $s.keys.redisUrl) }}
{{- fail "config.queue=redis-streams needs secrets.existingSecret and secrets.keys.redisUrl (DD_REDIS_URL)" }}
{{- end }}
{{- end }}
{{- if eq $q "servicebus" }}
{{- if not (and $s.existingSecret (or $s.keys.servicebusConnectionString $s.keys.servicebusPolicyKey)) }}
{{- fail "config.queue=servicebus needs secrets.existingSecret and secrets.keys.servicebusConnectionString or secrets.keys.servicebusPolicyKey" }}
{{- end }}
{{- end }}
{{- /* The in-process queue lives inside one process. */}}
{{- if and (eq $q "memory") (eq .Values.mode "split") }}
{{- fail "config.queue=memory cannot be used with mode=split: the gateway and the workers run in separate pods and would each have their own in-process queue (requests would never reach a worker). Use mode=all with worker.replicaCount=1 and worker.autoscaling.enabled=false (embedded demo), or a shared queue (redis-streams, servicebus)" }}
{{- end }}
{{- if and (eq $q "memory") (or $w.autoscaling.enabled $w.keda.enabled (gt (int $w.replicaCount) 1)) }}
{{- fail "config.queue=memory keeps the queue and state inside one pod: use mode=all, worker.replicaCount=1, worker.autoscaling.enabled=false and worker.keda.enabled=false, or a shared queue (redis-streams, servicebus)" }}
{{- end }}
{{- /* Autoscaling. */}}
{{- if and $w.keda.enabled $w.autoscaling.enabled }}
{{- fail "worker.keda.enabled=true: KEDA creates and owns the HorizontalPodAutoscaler of the workers; set worker.autoscaling.enabled=false (min/max replicas come from worker.keda.minReplicaCount/maxReplicaCount)" }}
{{- end }}
{{- range $block := list "gateway" "worker" }}
{{- $a := index $.Values $block "autoscaling" }}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "%s.autoscaling: minReplicas (%v) is greater than maxReplicas (%v)" $block $a.minReplicas $a.maxReplicas) }}
{{- end }}
{{- $p := index $.Values $block "pdb" }}
{{- if and $p.enabled (not (kindIs "invalid" $p.minAvailable)) (not (kindIs "invalid" $p.maxUnavailable)) }}
{{- fail (printf "%s.pdb: set only one of minAvailable and maxUnavailable" $block) }}
{{- end }}
{{- end }}
{{- if $w.keda.enabled }}
{{- $k := $w.keda }}
{{- if gt (int $k.minReplicaCount) (int $k.maxReplicaCount) }}
{{- fail "worker.keda: minReplicaCount is greater than maxReplicaCount" }}
{{- end }}
{{- if eq $q "redis-streams" }}
{{- if not $k.redisStreams.address }}
{{- fail "worker.keda.enabled with config.queue=redis-streams needs worker.keda.redisStreams.address (host:port of Redis; the Secret holds a URL, KEDA needs host:port)" }}
{{- end }}
{{- if and $s.keys.redisPassword (not $s.existingSecret) }}
{{- fail "secrets.keys.redisPassword needs secrets.existingSecret" }}
{{- end }}
{{- end }}
{{- if eq $q "servicebus" }}
{{- if not ($k.servicebus.queueName | default .Values.config.servicebus.queue) }}
{{- fail "worker.keda.enabled with config.queue=servicebus needs worker.keda.servicebus.queueName or config.servicebus.queue" }}
{{- end }}
{{- if eq $k.servicebus.auth "connectionString" }}
{{- if not (and $s.existingSecret ($k.servicebus.connectionStringKey | default $s.keys.servicebusConnectionString)) }}
{{- fail "worker.keda.servicebus.auth=connectionString needs secrets.existingSecret and worker.keda.servicebus.connectionStringKey or secrets.keys.servicebusConnectionString (or use auth=podIdentity)" }}
{{- end }}
{{- else }}
{{- if not ($k.servicebus.namespace | default .Values.config.servicebus.namespace) }}
{{- fail "worker.keda.servicebus.auth=podIdentity needs worker.keda.servicebus.namespace or config.servicebus.namespace" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Secrets. */}}
{{- if .Values.workloadIdentity.enabled }}
{{- if not .Values.workloadIdentity.clientId }}
{{- fail "workloadIdentity.enabled needs workloadIdentity.clientId (the managed identity's or app registration's client id)" }}
{{- end }}
{{- end }}
{{- if $s.keyVault.enabled }}
{{- $kv := $s.keyVault }}
{{- if not $s.existingSecret }}
{{- fail "secrets.keyVault.enabled needs secrets.existingSecret: the name of the Secret the CSI driver syncs the Key Vault secrets into (it must not be managed by anything else)" }}
{{- end }}
{{- if not (and $kv.name $kv.tenantId) }}
{{- fail "secrets.keyVault.enabled needs secrets.keyVault.name and secrets.keyVault.tenantId" }}
{{- end }}
{{- if not (include "dronedelivery.keyVaultClientId" .) }}
{{- fail "secrets.keyVault.enabled needs a client id: secrets.keyVault.clientId or workloadIdentity.clientId" }}
{{- end }}
{{- $synced := list }}
{{- range $kv.objects }}{{ $synced = append $synced .key }}{{ end }}
{{- $needed := deepCopy $s.keys }}
{{- if and $w.keda.enabled (eq $q "servicebus") (eq $w.keda.servicebus.auth "connectionString") $w.keda.servicebus.connectionStringKey }}
{{- $_ := set $needed "worker.keda.servicebus.connectionStringKey" $w.keda.servicebus.connectionStringKey }}
{{- end }}
{{- range $name, $key := $needed }}
{{- if and $key (not (has $key $synced)) }}
{{- fail (printf "%s is %q but no secrets.keyVault.objects entry has key %q: the synced Secret would lack it" (ternary $name (printf "secrets.keys.%s" $name) (contains "." $name)) $key $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
