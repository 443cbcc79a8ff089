{{/* Names and labels shared by the templates. */}}

{{- define "aifactory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aifactory.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "aifactory.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "aifactory.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "aifactory.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "aifactory.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aifactory
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator") */}}
{{- define "aifactory.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aifactory.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aifactory.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "aifactory.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "aifactory.fullname" .)) .Values.serviceAccount.operator.name -}}
{{- end -}}

{{- define "aifactory.apiServiceAccount" -}}
{{- default (printf "%s-api" (include "aifactory.fullname" .)) .Values.serviceAccount.api.name -}}
{{- end -}}

{{- define "aifactory.jwtSecretName" -}}
{{- default (printf "%s-slurm-jwt" (include "aifactory.fullname" .)) .Values.slurm.jwt.existingSecret -}}
{{- end -}}

{{- define "aifactory.sshSecretName" -}}
{{- default (printf "%s-slurm-ssh" (include "aifactory.fullname" .)) .Values.slurm.ssh.existingSecret -}}
{{- end -}}

{{/* The pod-level parts both Deployments share. */}}
{{- define "aifactory.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/*
RBAC from the plain rule files (files/rbac/<component>-rules.yaml). Each file maps a scope to PolicyRules;
the caller says which scopes go into the ClusterRole and which namespaces get a Role with which scopes:
  (dict "root" $ "component" "operator" "serviceAccount" "<name>"
        "clusterScopes" (list "cluster" "watched") "namespaces" (dict "release" (list "ns")))
*/}}
{{- define "aifactory.rbac" -}}
{{- $root := .root -}}
{{- $rules := $root.Files.Get (printf "files/rbac/%s-rules.yaml" .component) | fromYaml -}}
{{- $name := printf "%s-%s" (include "aifactory.fullname" $root) .component -}}
{{- $sa := .serviceAccount -}}
{{- $clusterRules := list -}}
{{- range .clusterScopes }}
{{- $clusterRules = concat $clusterRules (get $rules . | default list) -}}
{{- end }}
{{- if $clusterRules }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ $name }}
  labels:
    {{- include "aifactory.labels" $root | nindent 4 }}
rules:
  {{- toYaml $clusterRules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "aifactory.labels" $root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- /* namespace -> rules, so that a namespace named twice (e.g. the release one is also watched) gets one Role */}}
{{- $roles := dict -}}
{{- range $scope, $namespaces := .namespaces }}
{{- range $namespaces }}
{{- $_ := set $roles . (concat (get $roles . | default list) (get $rules $scope | default list)) -}}
{{- end }}
{{- end }}
{{- range $namespace, $nsRules := $roles }}
{{- if $nsRules }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "aifactory.labels" $root | nindent 4 }}
rules:
  {{- toYaml $nsRules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "aifactory.labels" $root | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $name }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The namespace whose AIServices the REST API serves. */}}
{{- define "aifactory.apiNamespace" -}}
{{- default .Release.Namespace .Values.api.namespace -}}
{{- end -}}
