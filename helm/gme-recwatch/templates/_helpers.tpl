{{/* Chart name, overridable. */}}
{{- define "gme-recwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full resource name: <release>-<chart>, or the release name if it already contains the chart name. */}}
{{- define "gme-recwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gme-recwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "gme-recwatch.labels" -}}
helm.sh/chart: {{ include "gme-recwatch.chart" . }}
{{ include "gme-recwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gme-recwatch
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the pod; immutable once installed. */}}
{{- define "gme-recwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gme-recwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gme-recwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gme-recwatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gme-recwatch.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the keyring, chart-managed or the user's. */}}
{{- define "gme-recwatch.secretName" -}}
{{- default (printf "%s-keys" (include "gme-recwatch.fullname" .)) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "gme-recwatch.callbackServiceName" -}}
{{- include "gme-recwatch.fullname" . -}}
{{- end -}}

{{- define "gme-recwatch.adminServiceName" -}}
{{- printf "%s-admin" (include "gme-recwatch.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{- define "gme-recwatch.claimName" -}}
{{- default (printf "%s-state" (include "gme-recwatch.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{/*
A setting as an env var value. Helm reads numbers in values as float64, so 1000000 would
print as "1e+06", which the service cannot parse as an int: whole numbers print as integers.
*/}}
{{- define "gme-recwatch.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

{{/* The `job` label Prometheus gives this release's targets, as the ServiceMonitor sets it; ""
when it comes from a Service label the chart cannot read. */}}
{{- define "gme-recwatch.job" -}}
{{- $sm := .Values.serviceMonitor -}}
{{- if $sm.job -}}
{{- $sm.job -}}
{{- else if eq $sm.jobLabel "app.kubernetes.io/name" -}}
{{- include "gme-recwatch.name" . -}}
{{- else if not $sm.jobLabel -}}
{{- include "gme-recwatch.adminServiceName" . -}}
{{- end -}}
{{- end -}}

{{/* The matchers that narrow every rule to this release: its namespace and job. */}}
{{- define "gme-recwatch.ruleSelector" -}}
{{- if .Values.prometheusRule.selector -}}
{{- .Values.prometheusRule.selector -}}
{{- else -}}
{{- $job := include "gme-recwatch.job" . -}}
{{- printf "namespace=%q" .Release.Namespace -}}
{{- if $job }}{{ printf ", job=%q" $job }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* The URL the canary posts to: canary.url, else the public URL the Ingress serves, else the
callback Service inside the cluster (which proves less: no Ingress, no TLS). */}}
{{- define "gme-recwatch.canaryUrl" -}}
{{- if .Values.canary.url -}}
{{- .Values.canary.url -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $host := first .Values.ingress.hosts -}}
{{- printf "%s://%s%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) $host .Values.config.callback_path -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%v%s" (include "gme-recwatch.callbackServiceName" .) .Release.Namespace .Values.service.callback.port .Values.config.callback_path -}}
{{- end -}}
{{- end -}}

{{/* The service's settings as GME_RECWATCH_* variables, then extraEnv: what the Deployment's
container and the online check (templates/tests/) are both given. */}}
{{- define "gme-recwatch.env" -}}
{{- $config := deepCopy .Values.config -}}
{{- if ne .Values.redis.url "" }}
{{- /* The state lives in Redis: no snapshot file. */ -}}
{{- $_ := set $config "state_file" "" -}}
{{- $_ := set $config "redis_url" .Values.redis.url -}}
{{- if .Values.redis.existingSecret }}
{{- $_ := set $config "redis_password_file" "/etc/gme-recwatch/redis/password" -}}
{{- end }}
{{- end -}}
{{- if .Values.canary.enabled }}
{{- $_ := set $config "canary_interval_seconds" .Values.canary.intervalSeconds -}}
{{- end }}
{{- /* The cos section wins over config.cos_*; its per-app buckets become a mounted file. */ -}}
{{- $cos := .Values.cos -}}
{{- range $name, $value := dict "cos_bucket" $cos.bucket "cos_region" $cos.region "cos_endpoint" $cos.endpoint }}
{{- if $value }}{{ $_ := set $config $name $value }}{{ end -}}
{{- end }}
{{- if $cos.buckets }}
{{- $_ := set $config "cos_buckets_file" (printf "%s/buckets" (include "gme-recwatch.cosBucketsDir" .)) -}}
{{- end }}
{{- if and (or $config.cos_bucket $config.cos_buckets_file) (not $config.cos_region) }}
{{- fail "cos.bucket (or cos.buckets) needs cos.region, e.g. ap-guangzhou: the region of the bucket(s) the GME console uploads to" }}
{{- end }}
{{- range $name, $value := $config }}
- name: {{ printf "GME_RECWATCH_%s" (upper $name) }}
  value: {{ include "gme-recwatch.envValue" $value }}
{{- end }}
{{- with $cos.existingSecret }}
{{- /* The COS API key (CAM), from a Secret: never a value in the pod spec. */}}
- name: TENCENTCLOUD_SECRET_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $cos.existingSecretIdKey }}
- name: TENCENTCLOUD_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $cos.existingSecretKeyKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Where the per-app COS buckets file (cos.buckets) is mounted. */}}
{{- define "gme-recwatch.cosBucketsDir" -}}
/etc/gme-recwatch/cos
{{- end -}}

{{/* Mounts of the keyring Secret, (with Redis) its password Secret and (with cos.buckets) the
per-app buckets file. */}}
{{- define "gme-recwatch.secretMounts" -}}
- name: keyring
  mountPath: {{ dir .Values.config.keys_file }}
  readOnly: true
{{- if and .Values.redis.url .Values.redis.existingSecret }}
- name: redis-password
  mountPath: /etc/gme-recwatch/redis
  readOnly: true
{{- end }}
{{- if .Values.cos.buckets }}
- name: cos-buckets
  mountPath: {{ include "gme-recwatch.cosBucketsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The volumes of those mounts. A whole-directory Secret mount (no subPath), so Secret updates
reach the file and the service's reload rotates keys without a restart. */}}
{{- define "gme-recwatch.secretVolumes" -}}
- name: keyring
  secret:
    secretName: {{ include "gme-recwatch.secretName" . }}
    defaultMode: 288 # 0440: the owner and the pod's fsGroup may read
    items:
      - key: {{ .Values.secret.existingSecretKey }}
        path: {{ base .Values.config.keys_file }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
- name: redis-password
  secret:
    secretName: {{ .Values.redis.existingSecret }}
    defaultMode: 288 # 0440
    items:
      - key: {{ .Values.redis.existingSecretPasswordKey }}
        path: password
{{- end }}
{{- if .Values.cos.buckets }}
- name: cos-buckets
  configMap:
    name: {{ include "gme-recwatch.fullname" . }}-cos-buckets
{{- end }}
{{- end -}}
