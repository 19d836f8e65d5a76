{{/* Name of the chart, or nameOverride. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name except the gateway Services (their names are part of the Knative contract). */}}
{{- define "sluice.fullname" -}}
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

{{- define "sluice.controller.fullname" -}}{{ include "sluice.fullname" . | trunc 52 | trimSuffix "-" }}-controller{{- end -}}
{{- define "sluice.gateway.fullname" -}}{{ include "sluice.fullname" . | trunc 55 | trimSuffix "-" }}-gateway{{- end -}}
{{- define "sluice.xdsTLS.serverSecret" -}}{{ include "sluice.controller.fullname" . }}-xds-tls{{- end -}}
{{- define "sluice.xdsTLS.clientSecret" -}}{{ include "sluice.gateway.fullname" . }}-xds-tls{{- end -}}
{{- define "sluice.bootstrap.name" -}}{{ include "sluice.gateway.fullname" . }}-bootstrap{{- end -}}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end -}}

{{- define "sluice.controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "sluice.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "sluice.controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.controller.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.controller.image" -}}
{{- printf "%s:%s" .Values.controller.image.repository (default .Chart.AppVersion .Values.controller.image.tag) -}}
{{- end -}}

{{/* host:port of the controller's xDS server as the gateway's bootstrap names it. */}}
{{- define "sluice.xdsAddress" -}}
{{- if .Values.gateway.xdsAddress -}}
{{- .Values.gateway.xdsAddress -}}
{{- else -}}
{{- printf "%s.%s.svc.%s:%d" (include "sluice.controller.fullname" .) .Release.Namespace .Values.controller.clusterDomain (int .Values.controller.xdsPort) -}}
{{- end -}}
{{- end -}}

{{/* Refuse settings that cannot work, before anything is applied. */}}
{{- define "sluice.validate" -}}
{{- if not (has .Values.gateway.kind (list "DaemonSet" "Deployment")) -}}
{{- fail (printf "gateway.kind must be DaemonSet or Deployment, not %q" .Values.gateway.kind) -}}
{{- end -}}
{{- if and .Values.gateway.autoscaling.enabled (ne .Values.gateway.kind "Deployment") -}}
{{- fail "gateway.autoscaling.enabled needs gateway.kind=Deployment" -}}
{{- end -}}
{{- if le (int .Values.gateway.terminationGracePeriodSeconds) (add (int .Values.gateway.drainSeconds) 5 | int) -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%d) must exceed gateway.drainSeconds (%d) by more than 5s: the preStop hook drains that long before Envoy gets SIGTERM" (int .Values.gateway.terminationGracePeriodSeconds) (int .Values.gateway.drainSeconds)) -}}
{{- end -}}
{{- range $k, $v := .Values.config -}}
{{- if hasSuffix "-port" $k -}}
{{- fail (printf "config.%s: set listener ports with ports.* so the Envoy pods and Services follow them" $k) -}}
{{- end -}}
{{- end -}}
{{- $ports := list (int .Values.ports.externalHTTP) (int .Values.ports.externalHTTPS) (int .Values.ports.internalHTTP) (int .Values.ports.internalHTTPS) (int .Values.gateway.adminPort) -}}
{{- if ne (len (uniq $ports)) 5 -}}
{{- fail "ports.* and gateway.adminPort must be five different ports" -}}
{{- end -}}
{{- if and .Values.xdsTLS.enabled (not (has .Values.xdsTLS.source (list "helm" "cert-manager"))) -}}
{{- fail (printf "xdsTLS.source must be helm or cert-manager, not %q" .Values.xdsTLS.source) -}}
{{- end -}}
{{- if and .Values.xdsTLS.enabled (eq .Values.xdsTLS.source "cert-manager") (not .Values.xdsTLS.certManager.issuerRef.name) -}}
{{- fail "xdsTLS.certManager.issuerRef.name is required with xdsTLS.source=cert-manager" -}}
{{- end -}}
{{- end -}}

{{/*
Envoy's heap bound in bytes: gateway.maxHeapBytes, or when it is empty 5/6
of the container's memory limit (what `sluice bootstrap` assumes for its
default: 2.5 GiB of 3 GiB), 0 without a limit.
*/}}
{{- define "sluice.gateway.maxHeapBytes" -}}
{{- $g := .Values.gateway -}}
{{- if not (kindIs "invalid" $g.maxHeapBytes) -}}
{{- $g.maxHeapBytes | int64 -}}
{{- else -}}
{{- $q := toString (dig "resources" "limits" "memory" "" $g) -}}
{{- if not $q -}}0{{- else -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if or (not $num) (not (hasKey $units $unit)) -}}
{{- fail (printf "gateway.resources.limits.memory: %q is not a quantity this chart reads (a number with k, M, G, T, Ki, Mi, Gi or Ti); set gateway.maxHeapBytes" $q) -}}
{{- end -}}
{{- div (mul (mulf $num (get $units $unit) | int64) 5) 6 -}}
{{- end -}}
{{- end -}}
{{- end -}}
