{{/* The chart name, truncated to a DNS label. */}}
{{- define "weir.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: the release name, prefixed with the chart name
unless it contains it. Cut to 50 characters so that every object name built
from it (the longest suffix is "-proxy-admin") stays a 63-character label.
*/}}
{{- define "weir.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Object names of each part. */}}
{{- define "weir.controller.fullname" -}}
{{- printf "%s-controller" (include "weir.fullname" .) }}
{{- end }}
{{/* The Secret listing the notification webhooks. */}}
{{- define "weir.notifications.secretName" -}}
{{- .Values.notifications.existingSecret | default (printf "%s-notifications" (include "weir.fullname" .)) }}
{{- end }}
{{- define "weir.proxy.fullname" -}}
{{- printf "%s-proxy" (include "weir.fullname" .) }}
{{- end }}
{{/* The proxies' headless admin Service: how the controller finds them. */}}
{{- define "weir.proxy.adminService" -}}
{{- printf "%s-proxy-admin" (include "weir.fullname" .) }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "weir.labels" -}}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Selector labels of one part; call with (dict "ctx" . "component" "proxy"). */}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of one part's objects: the common ones plus its component. */}}
{{- define "weir.componentLabels" -}}
{{ include "weir.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The controller's ServiceAccount name. */}}
{{- define "weir.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "weir.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The proxies' ServiceAccount name. */}}
{{- define "weir.proxy.serviceAccountName" -}}
{{- if .Values.proxy.serviceAccount.create }}
{{- default (include "weir.proxy.fullname" .) .Values.proxy.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.proxy.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace served in namespace scope (empty in cluster scope). */}}
{{- define "weir.watchNamespace" -}}
{{- if eq .Values.rbac.scope "namespace" }}
{{- default .Release.Namespace .Values.rbac.watchNamespace }}
{{- end }}
{{- end }}

{{/* The image reference: repository with digest, else with tag (default appVersion). */}}
{{- define "weir.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The pod-level security context of both parts: non-root, the runtime's
default seccomp profile.
*/}}
{{- define "weir.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The container security context of both parts: nothing to escalate to, no
capabilities (neither binds a port below 1024), a read-only root file
system.
*/}}
{{- define "weir.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod placement and image pulling; call with (dict "ctx" . "part" .Values.proxy). */}}
{{- define "weir.podPlacement" -}}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .part.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .part.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Checks across values that the schema cannot express; each failure names the
values and the fix.
*/}}
{{- define "weir.validate" -}}
{{- if and (not .Values.controller.leaderElection.enabled) (gt (int .Values.controller.replicas) 1) }}
{{- fail (printf "controller.leaderElection.enabled=false with controller.replicas=%d: replicas without a Lease would all act on the same Canaries; set controller.replicas=1 or enable leader election" (int .Values.controller.replicas)) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled are both true: Prometheus would scrape every pod twice; enable one of them" }}
{{- end }}
{{- with .Values.proxy.autoscaling }}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) }}
{{- fail (printf "proxy.autoscaling.minReplicas (%d) is above proxy.autoscaling.maxReplicas (%d); lower minReplicas or raise maxReplicas" (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- end }}
{{- with .Values.proxy.podDisruptionBudget }}
{{- if and .enabled (hasKey . "minAvailable") (hasKey . "maxUnavailable") }}
{{- fail "proxy.podDisruptionBudget: set minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- end }}
{{- if and (ne .Values.rbac.scope "namespace") .Values.rbac.watchNamespace }}
{{- fail (printf "rbac.watchNamespace=%q is only used with rbac.scope=namespace; set rbac.scope=namespace or remove rbac.watchNamespace" .Values.rbac.watchNamespace) }}
{{- end }}
{{- end }}
