{{/*
Names, labels and shared fragments of the Herald chart.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release-qualified name every object starts with (at most 63 characters; the component
suffixes below keep within 63 as long as this stays under 54).
*/}}
{{- define "herald.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that never change over a release's life: Deployment and Service selectors. */}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "herald.labels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: herald
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "worker"). */}}
{{- define "herald.componentSelectorLabels" -}}
{{ include "herald.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one component's objects: (dict "ctx" $ "component" "worker"). */}}
{{- define "herald.componentLabels" -}}
{{ include "herald.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "herald.workerName" -}}
{{- printf "%s-worker" (include "herald.fullname" .) }}
{{- end }}

{{- define "herald.operatorName" -}}
{{- printf "%s-operator" (include "herald.fullname" .) }}
{{- end }}

{{- define "herald.workerServiceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (include "herald.workerName" .) .Values.worker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "herald.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "herald.operatorName" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The one image both processes run: repository:tag, or repository@digest. */}}
{{- define "herald.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret and key holding the PostgreSQL URL. */}}
{{- define "herald.databaseSecretName" -}}
{{- if .Values.database.url }}
{{- printf "%s-database" (include "herald.fullname" .) }}
{{- else if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- fail "database: set database.existingSecret (a Secret holding the PostgreSQL URL) or database.url" }}
{{- end }}
{{- end }}

{{- define "herald.databaseSecretKey" -}}
{{- if .Values.database.url }}url{{ else }}{{ .Values.database.existingSecretKey }}{{ end }}
{{- end }}

{{/* The Secret holding the API token, empty when the API is open. */}}
{{- define "herald.apiTokenSecretName" -}}
{{- if .Values.apiToken.value }}
{{- printf "%s-api-token" (include "herald.fullname" .) }}
{{- else if .Values.apiToken.existingSecret }}
{{- .Values.apiToken.existingSecret }}
{{- end }}
{{- end }}

{{- define "herald.apiTokenSecretKey" -}}
{{- if .Values.apiToken.value }}token{{ else }}{{ .Values.apiToken.existingSecretKey }}{{ end }}
{{- end }}

{{/* kopf peering: on when asked for, or when more than one operator replica runs. */}}
{{- define "herald.peering" -}}
{{- if or .Values.operator.peering.enabled (gt (int .Values.operator.replicas) 1) }}true{{ end }}
{{- end }}

{{/* Environment shared by every Herald container: namespace, database, logging. */}}
{{- define "herald.commonEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: HERALD_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "herald.databaseSecretName" . }}
      key: {{ include "herald.databaseSecretKey" . }}
- name: HERALD_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: HERALD_LOG_LEVEL
  value: {{ .Values.logging.level | quote }}
- name: HERALD_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
- name: HERALD_DB_CONNECT_TIMEOUT
  value: {{ printf "%ds" (int .Values.database.connectTimeoutSeconds) | quote }}
{{- end }}

{{/* The egress policy, read by the workers (enforced at connect time) and by the operator
(a target whose URL names a refused address is not Ready): the same values for both. */}}
{{- define "herald.egressEnv" -}}
{{- with .Values.worker.egress }}
- name: HERALD_EGRESS_ALLOW
  value: {{ join "," (.allow | default list) | quote }}
- name: HERALD_EGRESS_DENY
  value: {{ join "," (.deny | default list) | quote }}
- name: HERALD_EGRESS_ALLOW_LOOPBACK
  value: {{ .allowLoopback | default false | quote }}
{{- end }}
{{- end }}

{{/* The writable scratch space: the root filesystem is read-only. */}}
{{- define "herald.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpVolumeSizeLimit }}
{{- end }}

{{- define "herald.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}
