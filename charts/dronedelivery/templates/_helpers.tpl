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
Chart name and version as used by the chart label.
*/}}
{{- define "dronedelivery.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "dronedelivery.labels" -}}
helm.sh/chart: {{ include "dronedelivery.chart" . }}
{{ include "dronedelivery.selectorLabels" . }}
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
Selector labels (immutable on a Deployment: never add version-like labels here).
The component label is where the later roles (gateway / workflow) will differ.
*/}}
{{- define "dronedelivery.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dronedelivery.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: engine
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

{{/*
Configuration checks that a JSON schema cannot express.
*/}}
{{- define "dronedelivery.validate" -}}
{{- $s := .Values.secrets -}}
{{- if eq .Values.config.queue "redis-streams" }}
{{- if not (and $s.existingSecret $s.keys.redisUrl) }}
{{- fail "config.queue=redis-streams needs secrets.existingSecret and secrets.keys.redisUrl (DD_REDIS_URL)" }}
{{- end }}
{{- end }}
{{- if eq .Values.config.queue "servicebus" }}
{{- if not (and $s.existingSecret (or $s.keys.servicebusConnectionString $s.keys.servicebusPolicyKey)) }}
{{- fail "config.queue=servicebus needs secrets.existingSecret and secrets.keys.servicebusConnectionString or secrets.keys.servicebusPolicyKey" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.config.queue "memory") (or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1)) }}
{{- fail "config.queue=memory keeps the queue and state inside one pod: use replicaCount=1 and autoscaling.enabled=false, or a shared queue (redis-streams, servicebus)" }}
{{- end }}
{{- if and .Values.pdb.enabled (not (kindIs "invalid" .Values.pdb.minAvailable)) (not (kindIs "invalid" .Values.pdb.maxUnavailable)) }}
{{- fail "pdb: set only one of minAvailable and maxUnavailable" }}
{{- end }}
{{- end }}
