{{/* Chart name, truncated to a DNS label. */}}
{{- define "vitbench.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, prefixed by the chart name unless it already has it. */}}
{{- define "vitbench.fullname" -}}
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

{{- define "vitbench.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name + instance only (immutable on Deployments). Needs a dict with ctx and component. */}}
{{- define "vitbench.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vitbench.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Standard labels. Needs a dict with ctx and component. */}}
{{- define "vitbench.labels" -}}
helm.sh/chart: {{ include "vitbench.chart" .ctx }}
{{ include "vitbench.selectorLabels" . }}
app.kubernetes.io/part-of: vitbench
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vitbench.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-submitter" (include "vitbench.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A vitbench image: <imageRegistry>/<last part of repository>:<tag>, or repository:tag without a registry. */}}
{{- define "vitbench.image" -}}
{{- $repo := .image.repository }}
{{- with .ctx.Values.imageRegistry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) (base $repo) }}{{ end }}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{- define "vitbench.mlflowName" -}}
{{- printf "%s-mlflow" (include "vitbench.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vitbench.postgresName" -}}
{{- printf "%s-postgresql" (include "vitbench.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vitbench.apiName" -}}
{{- printf "%s-api" (include "vitbench.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The tracking URI every client uses. */}}
{{- define "vitbench.trackingUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s.%s.svc.cluster.local:%d" (include "vitbench.mlflowName" .) .Release.Namespace (int .Values.mlflow.port) }}
{{- else }}
{{- required "registry.externalTrackingUri is required when mlflow.enabled is false" .Values.registry.externalTrackingUri }}
{{- end }}
{{- end }}

{{/* Database env for MLflow: DB_PASSWORD from the Secret, then MLFLOW_BACKEND_STORE_URI built from it. */}}
{{- define "vitbench.databaseEnv" -}}
{{- $db := .Values.database -}}
{{- if $db.bundled.enabled }}
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $db.bundled.existingSecret }}
      key: {{ $db.bundled.passwordKey }}
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ printf "postgresql+psycopg2://%s:$(DB_PASSWORD)@%s:5432/%s" $db.bundled.user (include "vitbench.postgresName" .) $db.bundled.database | quote }}
{{- else }}
- name: DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "database.external.existingSecret is required with an external database" $db.external.existingSecret }}
      key: {{ $db.external.passwordKey }}
- name: MLFLOW_BACKEND_STORE_URI
  value: {{ printf "postgresql+psycopg2://%s:$(DB_PASSWORD)@%s:%d/%s?sslmode=%s" $db.external.user (required "database.external.host is required with an external database" $db.external.host) (int $db.external.port) $db.external.database $db.external.sslmode | quote }}
{{- end }}
{{- end }}

{{/* Pod-level and container-level security contexts (restricted profile). */}}
{{- define "vitbench.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
{{- define "vitbench.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/* MLflow runs with its basic-auth app. */}}
{{- define "vitbench.mlflowAuth" -}}
{{- if and .Values.mlflow.enabled .Values.mlflow.auth.enabled }}true{{ end }}
{{- end }}

{{/* Credential Secrets of the registry's users (keys MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD). */}}
{{- define "vitbench.authAdminSecret" -}}
{{- default (printf "%s-mlflow-admin" (include "vitbench.fullname" .)) .Values.mlflow.auth.admin.existingSecret }}
{{- end }}
{{- define "vitbench.authPromoterSecret" -}}
{{- default (printf "%s-mlflow-promoter" (include "vitbench.fullname" .)) .Values.mlflow.auth.promoter.existingSecret }}
{{- end }}
{{- define "vitbench.authServiceSecret" -}}
{{- default (printf "%s-mlflow-service" (include "vitbench.fullname" .)) .Values.mlflow.auth.service.existingSecret }}
{{- end }}
{{- define "vitbench.authTrainerSecret" -}}
{{- required "registry.credentialsSecret names the trainer's Secret and must be set when mlflow.auth.enabled" .Values.registry.credentialsSecret }}
{{- end }}

{{/*
A generated credential Secret: rendered when it does not exist yet (random password) or when this release made
it (same password again, read back with lookup, so upgrades keep it); a Secret someone else made is left alone.
`helm template` cannot look up, so it always renders a fresh one. Needs a dict: ctx, name, username, extra (list
of extra random keys).
*/}}
{{- define "vitbench.generatedSecret" -}}
{{- $ctx := .ctx }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace .name }}
{{- $owner := "" }}
{{- if $existing }}
{{- $owner = dig "metadata" "annotations" "meta.helm.sh/release-name" "" $existing }}
{{- end }}
{{- if or (not $existing) (eq $owner $ctx.Release.Name) }}
{{- $data := dict }}
{{- if $existing }}{{ $data = dig "data" (dict) $existing }}{{ end }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  labels:
    {{- include "vitbench.labels" (dict "ctx" $ctx "component" "mlflow-auth") | nindent 4 }}
  annotations:
    # Deleting the release keeps the credentials (and the users the registry knows them by).
    helm.sh/resource-policy: keep
type: Opaque
data:
  MLFLOW_TRACKING_USERNAME: {{ .username | b64enc | quote }}
  MLFLOW_TRACKING_PASSWORD: {{ get $data "MLFLOW_TRACKING_PASSWORD" | default (randAlphaNum 32 | b64enc) | quote }}
  {{- range $key := .extra }}
  {{ $key }}: {{ get $data $key | default (randAlphaNum 48 | b64enc) | quote }}
  {{- end }}
{{- end }}
{{- end }}
