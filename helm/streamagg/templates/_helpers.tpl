{{/* Names and labels shared by every template. */}}
{{- define "streamagg.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamagg.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamagg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamagg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamagg.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "streamagg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "streamagg.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* librdkafka properties of one client: security settings, then the user's pass-through ones. */}}
{{- define "streamagg.kafkaProperties" -}}
{{- $k := .root.Values.kafka -}}
{{- if ne $k.securityProtocol "PLAINTEXT" }}
"security.protocol" = {{ $k.securityProtocol | quote }}
{{- end }}
{{- if $k.tls.caSecret }}
"ssl.ca.location" = "/etc/streamagg/kafka-ca/{{ $k.tls.caKey }}"
{{- end }}
{{- range $key, $value := .extra }}
{{ $key | quote }} = {{ if kindIs "string" $value }}{{ $value | quote }}{{ else }}{{ $value }}{{ end }}
{{- end }}
{{- end -}}
