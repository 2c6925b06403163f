{{/* Name of the chart (labels). */}}
{{- define "orloj.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: the release name, so objects are `<release>-server`, `<release>-worker`, ... */}}
{{- define "orloj.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "orloj.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "server"). */}}
{{- define "orloj.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orloj.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "orloj.labels" -}}
{{ include "orloj.selectorLabels" . }}
helm.sh/chart: {{ include "orloj.chart" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: orloj
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Image reference; call with (dict "ctx" $ "image" .Values.image.server). */}}
{{- define "orloj.image" -}}
{{- $tag := .image.tag | default .ctx.Chart.AppVersion -}}
{{- if .ctx.Values.image.registry -}}
{{- printf "%s/%s:%s" .ctx.Values.image.registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding encryption key, setup token and API token. */}}
{{- define "orloj.secretName" -}}
{{- if .Values.existingSecret -}}{{ .Values.existingSecret }}{{- else -}}{{ include "orloj.fullname" . }}-secrets{{- end -}}
{{- end -}}

{{- define "orloj.postgresql.secretName" -}}
{{- if .Values.postgresql.auth.existingSecret -}}{{ .Values.postgresql.auth.existingSecret }}{{- else -}}{{ include "orloj.fullname" . }}-postgresql{{- end -}}
{{- end -}}

{{/* NATS URL: in-chart service or externalNats.url. */}}
{{- define "orloj.natsURL" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats:4222" (include "orloj.fullname" .) -}}
{{- else -}}
{{- required "externalNats.url is required when nats.enabled is false" .Values.externalNats.url -}}
{{- end -}}
{{- end -}}

{{/*
Reads one key of an existing Secret (upgrades keep generated values), else returns "".
Call with (dict "ctx" $ "name" "secret-name" "key" "k").
*/}}
{{- define "orloj.lookupSecretKey" -}}
{{- $s := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $s $s.data (hasKey $s.data .key) -}}
{{- index $s.data .key | b64dec -}}
{{- end -}}
{{- end -}}

{{/* Env vars both orlojd and orlojworker get: Postgres DSN and the encryption key. */}}
{{- define "orloj.commonEnv" -}}
{{- if .Values.postgresql.enabled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "orloj.postgresql.secretName" . }}
      key: password
- name: ORLOJ_POSTGRES_DSN
  value: {{ printf "postgres://%s:$(POSTGRES_PASSWORD)@%s-postgresql:5432/%s?sslmode=disable" .Values.postgresql.auth.username (include "orloj.fullname" .) .Values.postgresql.auth.database | quote }}
{{- else if .Values.externalPostgres.existingSecret }}
- name: ORLOJ_POSTGRES_DSN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalPostgres.existingSecret }}
      key: {{ .Values.externalPostgres.existingSecretKey }}
{{- else }}
- name: ORLOJ_POSTGRES_DSN
  valueFrom:
    secretKeyRef:
      name: {{ include "orloj.fullname" . }}-external-postgres
      key: postgres-dsn
{{- end }}
- name: ORLOJ_SECRET_ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "orloj.secretName" . }}
      key: secret-encryption-key
{{- end -}}

{{- define "orloj.serverServiceAccountName" -}}
{{- if .Values.server.serviceAccount.create -}}{{ .Values.server.serviceAccount.name | default (printf "%s-server" (include "orloj.fullname" .)) }}{{- else -}}{{ .Values.server.serviceAccount.name | default "default" }}{{- end -}}
{{- end -}}

{{- define "orloj.workerServiceAccountName" -}}
{{- if .Values.worker.serviceAccount.create -}}{{ .Values.worker.serviceAccount.name | default (printf "%s-worker" (include "orloj.fullname" .)) }}{{- else -}}{{ .Values.worker.serviceAccount.name | default "default" }}{{- end -}}
{{- end -}}

{{/* Fails rendering on combinations the schema cannot express. */}}
{{- define "orloj.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalPostgres.dsn) (not .Values.externalPostgres.existingSecret) -}}
{{- fail "postgresql.enabled is false: set externalPostgres.dsn or externalPostgres.existingSecret" -}}
{{- end -}}
{{- if and (not .Values.nats.enabled) (not .Values.externalNats.url) -}}
{{- fail "nats.enabled is false: set externalNats.url" -}}
{{- end -}}
{{- if and .Values.server.serviceMonitor.enabled (eq .Values.auth.mode "native") (not .Values.auth.apiToken) (not .Values.existingSecret) -}}
{{- fail "server.serviceMonitor with auth.mode native scrapes /metrics with a bearer token: set auth.apiToken (or existingSecret with key api-token)" -}}
{{- end -}}
{{- if and (gt (int .Values.server.replicaCount) 1) (eq .Values.server.eventBusBackend "memory") -}}
{{- fail "server.eventBusBackend memory cannot fan out events across several server replicas; use nats" -}}
{{- end -}}
{{- end -}}
