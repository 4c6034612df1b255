{{/* Labels of every object: the same as the kustomize base's, plus Helm's. */}}
{{- define "ccm.labels" -}}
app.kubernetes.io/name: cloud-controller-manager
app.kubernetes.io/part-of: ccm
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ccm.selector" -}}
k8s-app: cloud-controller-manager
{{- end -}}

{{- define "ccm.configSecret" -}}
{{- default "cloud-controller-manager-config" .Values.cloudConfig.existingSecret -}}
{{- end -}}

{{- define "ccm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The container's args: the chart's flags, then extraArgs. */}}
{{- define "ccm.args" -}}
- --cloud-provider={{ .Values.provider.name }}
- --cloud-config=/etc/ccm/cloud-config
- --leader-elect={{ .Values.leaderElection.enabled }}
{{- if .Values.useServiceAccountCredentials }}
- --use-service-account-credentials
{{- end }}
- --configure-cloud-routes={{ .Values.routes.enabled }}
{{- if .Values.routes.enabled }}
- --cluster-cidr={{ required "routes.clusterCIDR is required when routes.enabled" .Values.routes.clusterCIDR }}
{{- end }}
- --bind-address={{ .Values.bindAddress }}
- --secure-port={{ .Values.securePort }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}
