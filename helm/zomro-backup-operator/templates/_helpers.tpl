{{/* Chart name, possibly overridden. */}}
{{- define "zbo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects; the release name alone when it already contains the chart name. */}}
{{- define "zbo.fullname" -}}
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

{{- define "zbo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pod; never change them in an upgrade. */}}
{{- define "zbo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "zbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "zbo.labels" -}}
helm.sh/chart: {{ include "zbo.chart" . }}
{{ include "zbo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: zomro-backup-operator
{{- end }}

{{/* metadata.annotations (at indent 2, with its own leading newline) from commonAnnotations plus
extras; nothing at all when both are empty. */}}
{{- define "zbo.annotations" -}}
{{- $all := merge (dict) (.extra | default dict) (.root.Values.commonAnnotations | default dict) }}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{- define "zbo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "zbo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "zbo.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the default credentials Secret, or empty when there is none. */}}
{{- define "zbo.credentialsSecretName" -}}
{{- if .Values.credentials.existingSecret }}
{{- .Values.credentials.existingSecret }}
{{- else if .Values.credentials.create }}
{{- printf "%s-credentials" (include "zbo.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Refuse contradictory credentials settings with a message that says what to change. */}}
{{- define "zbo.validate" -}}
{{- $c := .Values.credentials }}
{{- if and $c.create $c.existingSecret }}
{{- fail "credentials: set either existingSecret or create, not both" }}
{{- end }}
{{- if $c.create }}
{{- if not (or $c.token (and $c.username $c.password)) }}
{{- fail "credentials.create needs username and password, or token" }}
{{- end }}
{{- end }}
{{- $le := .Values.leaderElection }}
{{- if and (not $le.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail "replicaCount above 1 needs leaderElection.enabled: two standalone operators would both act" }}
{{- end }}
{{- if $le.enabled }}
{{- if not (lt (float64 $le.renewDeadlineSeconds) (float64 $le.leaseDurationSeconds)) }}
{{- fail "leaderElection.renewDeadlineSeconds must be below leaseDurationSeconds" }}
{{- end }}
{{- if not (gt (float64 $le.renewDeadlineSeconds) (mulf 1.2 $le.retryPeriodSeconds)) }}
{{- fail "leaderElection.renewDeadlineSeconds must be above 1.2 x retryPeriodSeconds" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The leader-election Lease: one per release, in the release namespace. */}}
{{- define "zbo.leaseName" -}}
{{- include "zbo.fullname" . }}
{{- end }}

{{/* Rules the operator needs in each namespace it watches (cluster-wide when it watches all). */}}
{{- define "zbo.namespacedRules" -}}
- apiGroups: [zomro.com]
  resources: [backupschedules, backups, backupretentions]
  verbs: [get, list, watch, patch]
- apiGroups: [zomro.com]
  resources: [backupschedules/status, backups/status, backupretentions/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
