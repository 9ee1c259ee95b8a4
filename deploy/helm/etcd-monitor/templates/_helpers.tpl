{{- /*
The chart keeps to Go's text/template and a few Sprig functions (default,
quote, required, toYaml, nindent): tests/deploy.rs renders it without helm.
Labels of every object, at the indentation of metadata.labels.
*/ -}}
{{- define "etcd-monitor.labels" }}
    app.kubernetes.io/name: etcd-monitor
    app.kubernetes.io/instance: {{ .Release.Name }}
    app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
    app.kubernetes.io/managed-by: {{ .Release.Service }}
    helm.sh/chart: etcd-monitor-{{ .Chart.Version }}
{{- end }}
