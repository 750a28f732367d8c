{{/* Names, labels and the values every template derives from the same place. */}}

{{- define "p2pk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-p2pk, or the release name alone when it already contains the chart name. */}}
{{- define "p2pk.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "p2pk.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "p2pk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: p2pk
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "operator"). */}}
{{- define "p2pk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "p2pk.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "p2pk.operator.fullname" -}}
{{- printf "%s-operator" (include "p2pk.fullname" .) }}
{{- end }}

{{- define "p2pk.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "p2pk.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "p2pk.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "p2pk.minio.fullname" -}}
{{- printf "%s-minio" (include "p2pk.fullname" .) }}
{{- end }}

{{/* Secret with the MinIO root credentials (keys accessKey, secretKey). */}}
{{- define "p2pk.minio.secretName" -}}
{{- default (include "p2pk.minio.fullname" .) .Values.minio.existingSecret }}
{{- end }}

{{/* host:port of the chart's MinIO S3 API inside the cluster. */}}
{{- define "p2pk.minio.endpoint" -}}
{{- printf "%s.%s.svc:9000" (include "p2pk.minio.fullname" .) .Release.Namespace }}
{{- end }}

{{/* Restricted pod-security settings shared by the chart's own containers. */}}
{{- define "p2pk.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Deep merge of two maps, returned as JSON: include with (dict "base" $defaults "over" $own).
Maps merge key by key; any other value in "over" (lists, false, 0, "") replaces the base's,
so an experiment can switch a default off. (sprig's merge and mergeOverwrite treat false and 0
as unset.)
*/}}
{{- define "p2pk.deepMerge" -}}
{{- $out := deepCopy .base }}
{{- range $key, $value := .over }}
{{- $base := get $out $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $base) }}
{{- $_ := set $out $key (include "p2pk.deepMerge" (dict "base" $base "over" $value) | fromJson) }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}
