{{/*
Pod template of one role, shared by the gateway Deployment and the worker (or
mode all engine) workload. Takes (dict "root" $ "r" <entry of dronedelivery.roles>).
*/}}
{{- define "dronedelivery.podTemplate" -}}
{{- $ := .root -}}
{{- $r := .r -}}
{{- $v := $.Values -}}
{{- $b := index $v $r.block -}}
{{- $consumes := ne $r.role "gateway" -}}
metadata:
  {{- $annotations := merge (dict) ($b.podAnnotations | default dict) ($v.podAnnotations | default dict) }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  labels:
    {{- include "dronedelivery.componentLabels" (dict "root" $ "component" $r.component) | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $b.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- if $v.workloadIdentity.enabled }}
    azure.workload.identity/use: "true"
    {{- end }}
spec:
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  serviceAccountName: {{ include "dronedelivery.serviceAccountName" $ }}
  automountServiceAccountToken: {{ $v.serviceAccount.automount }}
  enableServiceLinks: false
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . | quote }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ add $v.config.shutdownGraceSecs $v.terminationGraceExtraSeconds }}
  containers:
    - name: dronedelivery
      image: {{ include "dronedelivery.image" $ | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        - serve
        - --listen
        - "0.0.0.0:{{ $v.containerPort }}"
      ports:
        - name: http
          containerPort: {{ $v.containerPort }}
          protocol: TCP
      env:
        # {{ $r.role }}: {{ if eq $r.role "gateway" }}HTTP ingestion and reads; no queue consumers, no actors{{ else if eq $r.role "worker" }}queue consumers, fleet and delivery actors; /api answers 404{{ else }}HTTP API, queue consumers and the actor tree{{ end }}
        - name: DD_ROLE
          value: {{ $r.role | quote }}
        - name: DD_QUEUE
          value: {{ $v.config.queue | quote }}
        - name: DD_LOG_FORMAT
          value: {{ $v.config.logFormat | quote }}
        - name: RUST_LOG
          value: {{ $v.config.rustLog | quote }}
        - name: DD_SHUTDOWN_GRACE_SECS
          value: {{ $v.config.shutdownGraceSecs | quote }}
        {{- with $v.config.http }}
        - name: DD_HTTP_HEADER_TIMEOUT_SECS
          value: {{ .headerTimeoutSecs | default 10 | quote }}
        - name: DD_HTTP_BODY_TIMEOUT_SECS
          value: {{ .bodyTimeoutSecs | default 10 | quote }}
        - name: DD_MAX_CONNECTIONS
          value: {{ .maxConnections | default 10000 | quote }}
        {{- end }}
        {{- with $v.config.auth }}
        {{- if eq .mode "jwt" }}
        {{- if not (and .issuer .audience) }}
        {{- fail "config.auth.mode=jwt needs config.auth.issuer and config.auth.audience" }}
        {{- end }}
        - name: DD_AUTH_MODE
          value: "jwt"
        - name: DD_AUTH_ISSUER
          value: {{ .issuer | quote }}
        - name: DD_AUTH_AUDIENCE
          value: {{ .audience | quote }}
        {{- with .jwksUrl }}
        - name: DD_AUTH_JWKS_URL
          value: {{ . | quote }}
        {{- end }}
        - name: DD_AUTH_OWNER_CLAIM
          value: {{ .ownerClaim | default "sub" | quote }}
        - name: DD_AUTH_ROLES_CLAIM
          value: {{ .rolesClaim | default "roles" | quote }}
        - name: DD_AUTH_LEEWAY_SECS
          value: {{ .leewaySecs | default 60 | quote }}
        {{- end }}
        {{- end }}
        {{- if ne $r.role "worker" }}
        {{- with $v.config.rateLimit }}
        - name: DD_RATE_LIMIT_PER_SECOND
          value: {{ .perSecond | default 0 | quote }}
        - name: DD_RATE_LIMIT_BURST
          value: {{ .burst | default 50 | quote }}
        - name: DD_TRUST_FORWARDED_FOR
          value: {{ .trustForwardedFor | default false | quote }}
        {{- end }}
        {{- with $v.config.corsAllowedOrigins }}
        - name: DD_CORS_ALLOWED_ORIGINS
          value: {{ join "," . | quote }}
        {{- end }}
        {{- end }}
        {{- if $consumes }}
        - name: DD_CONSUMERS
          value: {{ $v.config.consumers | quote }}
        - name: DD_PREFETCH
          value: {{ $v.config.prefetch | quote }}
        - name: DD_MAX_DELIVERY_ATTEMPTS
          value: {{ $v.config.maxDeliveryAttempts | quote }}
        - name: DD_SIM_SPEED
          value: {{ $v.config.simSpeed | toString | quote }}
        - name: DD_FLEET_SIZE
          value: {{ $v.config.fleetSize | quote }}
        - name: DD_LEASE_SECS
          value: {{ $v.config.leaseSecs | quote }}
        {{- end }}
        {{- with $v.config.drones }}
        - name: DD_FLEET_MIX
          value: {{ .mix | quote }}
        - name: DD_PAYLOAD_LIMITS_KG
          value: {{ .payloadLimitsKg | quote }}
        - name: DD_DRONE_RANGE_KM
          value: {{ .rangeKm | toString | quote }}
        - name: DD_DRONE_RECHARGE_KM_PER_HOUR
          value: {{ .rechargeKmPerHour | toString | quote }}
        {{- end }}
        - name: DD_PARTITIONS
          value: {{ $v.config.partitions | quote }}
        {{- if ne $v.config.queue "memory" }}
        - name: DD_REDIS_PREFIX
          value: {{ $v.config.redis.prefix | quote }}
        - name: DD_STREAM
          value: {{ $v.config.redis.stream | quote }}
        - name: DD_CONSUMER_GROUP
          value: {{ $v.config.redis.consumerGroup | quote }}
        {{- end }}
        {{- $redisCa := ($v.config.redis.tlsCa | default dict) }}
        {{- if $redisCa.secretName }}
        - name: DD_REDIS_TLS_CA_FILE
          value: {{ printf "/etc/dronedelivery/redis-ca/%s" $redisCa.key | quote }}
        {{- end }}
        {{- with $v.config.servicebus }}
        {{- if .namespace }}
        - name: DD_SERVICEBUS_NAMESPACE
          value: {{ .namespace | quote }}
        {{- end }}
        {{- if .queue }}
        - name: DD_SERVICEBUS_QUEUE
          value: {{ .queue | quote }}
        {{- end }}
        {{- if .expeditedQueue }}
        - name: DD_SERVICEBUS_EXPEDITED_QUEUE
          value: {{ .expeditedQueue | quote }}
        {{- end }}
        {{- if .policyName }}
        - name: DD_SERVICEBUS_POLICY_NAME
          value: {{ .policyName | quote }}
        {{- end }}
        {{- end }}
        {{- if and $consumes $v.config.fleetIdFromPodName }}
        # Drones of this pod's own, added to the shared pool.
        - name: DD_FLEET_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        {{- $secret := $v.secrets.existingSecret }}
        {{- $keys := $v.secrets.keys }}
        {{- $secretEnv := dict "DD_ADMIN_TOKEN" $keys.adminToken "DD_REDIS_URL" $keys.redisUrl "DD_MONGODB_URI" $keys.mongodbUri "DD_SERVICEBUS_CONNECTION_STRING" $keys.servicebusConnectionString "DD_SERVICEBUS_POLICY_KEY" $keys.servicebusPolicyKey }}
        {{- if $secret }}
        {{- range $envName := keys $secretEnv | sortAlpha }}
        {{- with index $secretEnv $envName }}
        # {{ $envName }} from the Secret {{ $secret }}{{ if $v.secrets.keyVault.enabled }} (synced from Key Vault {{ $v.secrets.keyVault.name }}){{ end }}
        - name: {{ $envName }}
          valueFrom:
            secretKeyRef:
              name: {{ $secret | quote }}
              key: {{ . | quote }}
        {{- end }}
        {{- end }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $b.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml $b.resources | nindent 8 }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      {{- if or $v.tmpVolume.enabled $v.secrets.keyVault.enabled $redisCa.secretName }}
      volumeMounts:
        {{- if $v.tmpVolume.enabled }}
        - name: tmp
          mountPath: /tmp
        {{- end }}
        {{- if $redisCa.secretName }}
        - name: redis-ca
          mountPath: /etc/dronedelivery/redis-ca
          readOnly: true
        {{- end }}
        {{- if $v.secrets.keyVault.enabled }}
        # The CSI volume must be mounted for the driver to sync the Secret.
        - name: secrets-store
          mountPath: {{ $v.secrets.keyVault.mountPath }}
          readOnly: true
        {{- end }}
      {{- end }}
  {{- if or $v.tmpVolume.enabled $v.secrets.keyVault.enabled $redisCa.secretName }}
  volumes:
    {{- if $v.tmpVolume.enabled }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ $v.tmpVolume.sizeLimit }}
    {{- end }}
    {{- if $redisCa.secretName }}
    - name: redis-ca
      secret:
        secretName: {{ $redisCa.secretName | quote }}
        items:
          - key: {{ $redisCa.key | quote }}
            path: {{ $redisCa.key | quote }}
    {{- end }}
    {{- if $v.secrets.keyVault.enabled }}
    - name: secrets-store
      csi:
        driver: secrets-store.csi.k8s.io
        readOnly: true
        volumeAttributes:
          secretProviderClass: {{ include "dronedelivery.secretProviderClassName" $ }}
    {{- end }}
  {{- end }}
  {{- if $v.topologySpread.enabled }}
  topologySpreadConstraints:
    - maxSkew: {{ $v.topologySpread.maxSkew }}
      topologyKey: {{ $v.topologySpread.topologyKey }}
      whenUnsatisfiable: {{ $v.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "dronedelivery.selectorLabels" (dict "root" $ "component" $r.component) | nindent 10 }}
  {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
