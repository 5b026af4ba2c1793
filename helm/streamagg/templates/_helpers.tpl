{{/* Names and labels shared by every template. */}}
{{- define "streamagg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamagg.fullname" -}}
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

{{- define "streamagg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamagg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamagg.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamagg
{{- end -}}

{{- define "streamagg.labels" -}}
{{ include "streamagg.commonLabels" . }}
{{ include "streamagg.selectorLabels" . }}
{{- end -}}

{{/* The ingest gateway: a name of its own, so its pods never match the processor's selectors. */}}
{{- define "streamagg.ingest.name" -}}
{{- printf "%s-ingest" (include "streamagg.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamagg.ingest.fullname" -}}
{{- printf "%s-ingest" (include "streamagg.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamagg.ingest.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamagg.ingest.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamagg.ingest.labels" -}}
{{ include "streamagg.commonLabels" . }}
{{ include "streamagg.ingest.selectorLabels" . }}
app.kubernetes.io/component: ingest
{{- end -}}

{{- define "streamagg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamagg.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is set (immutable), else repository:tag. */}}
{{- define "streamagg.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The user's librdkafka pass-through properties of one client. */}}
{{- define "streamagg.kafkaProperties" -}}
{{- range $key, $value := .extra }}
{{ $key | quote }} = {{ if kindIs "string" $value }}{{ $value | quote }}{{ else }}{{ $value }}{{ end }}
{{- end }}
{{- end -}}

{{/* The Kafka client settings both the processor and the gateway take from the environment and
     mounted Secrets: SASL (the password as a file, never an environment variable) and the TLS
     client key's passphrase. Used in a container's env list. */}}
{{- define "streamagg.kafkaEnv" -}}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}
{{- $secret := required "kafka.sasl.existingSecret is required with a SASL protocol" .Values.kafka.sasl.existingSecret }}
- name: STREAMAGG_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: STREAMAGG_SASL_PASSWORD_FILE
  value: /etc/streamagg/kafka-sasl/{{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if and .Values.kafka.tls.clientSecret .Values.kafka.tls.clientKeyPasswordKey }}
- name: STREAMAGG_SSL_KEY_PASSWORD_FILE
  value: /etc/streamagg/kafka-client/{{ .Values.kafka.tls.clientKeyPasswordKey }}
{{- end }}
{{- end -}}

{{/* The mounts of the Kafka Secrets (CA, client certificate, SASL password). */}}
{{- define "streamagg.kafkaVolumeMounts" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/streamagg/kafka-ca
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- name: kafka-client
  mountPath: /etc/streamagg/kafka-client
  readOnly: true
{{- end }}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}
- name: kafka-sasl
  mountPath: /etc/streamagg/kafka-sasl
  readOnly: true
{{- end }}
{{- end -}}

{{- define "streamagg.kafkaVolumes" -}}
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
{{- end }}
{{- if .Values.kafka.tls.clientSecret }}
- name: kafka-client
  secret:
    secretName: {{ .Values.kafka.tls.clientSecret }}
    defaultMode: 0400
{{- end }}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}
- name: kafka-sasl
  secret:
    secretName: {{ .Values.kafka.sasl.existingSecret }}
    defaultMode: 0400
    items:
      - key: {{ .Values.kafka.sasl.passwordKey }}
        path: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- end -}}

{{/* Pod anti-affinity from a preset ("soft" or "hard") unless `affinity` is given. */}}
{{- define "streamagg.affinity" -}}
{{- $ctx := .ctx -}}
{{- if .affinity -}}
{{ toYaml .affinity }}
{{- else if eq .preset "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- .selectorLabels | nindent 12 }}
{{- else if eq .preset "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- .selectorLabels | nindent 10 }}
{{- end -}}
{{- end -}}

{{/* The rule file of docker/prometheus/rules.yml with each job selector narrowed to this release's
     namespace and the job the ServiceMonitors set (jobLabel: app.kubernetes.io/name), and the
     runbook links pointed at runbookUrl. */}}
{{- define "streamagg.rules" -}}
{{- $ns := .Release.Namespace -}}
{{- .Files.Get "files/rules.yml"
    | replace "job=\"streamagg-ingest\"" (printf "job=%q, namespace=%q" (include "streamagg.ingest.name" .) $ns)
    | replace "job=\"streamagg\"" (printf "job=%q, namespace=%q" (include "streamagg.name" .) $ns)
    | replace "https://example.invalid/streamagg/blob/main/docs/runbook.md" .Values.metrics.prometheusRule.runbookUrl -}}
{{- end -}}

{{/* The processor's Schema Registry credentials and CA (avro-confluent): the username from the
     Secret, the password as a file mounted from it (never an environment variable). */}}
{{- define "streamagg.registryEnv" -}}
{{- with .Values.schemaRegistry.existingSecret }}
- name: STREAMAGG_SCHEMA_REGISTRY_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.schemaRegistry.usernameKey }}
- name: STREAMAGG_SCHEMA_REGISTRY_PASSWORD_FILE
  value: /etc/streamagg/registry-auth/{{ $.Values.schemaRegistry.passwordKey }}
{{- end }}
{{- end -}}

{{- define "streamagg.registryVolumeMounts" -}}
{{- if .Values.schemaRegistry.existingSecret }}
- name: registry-auth
  mountPath: /etc/streamagg/registry-auth
  readOnly: true
{{- end }}
{{- if .Values.schemaRegistry.caSecret }}
- name: registry-ca
  mountPath: /etc/streamagg/registry-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "streamagg.registryVolumes" -}}
{{- if .Values.schemaRegistry.existingSecret }}
- name: registry-auth
  secret:
    secretName: {{ .Values.schemaRegistry.existingSecret }}
    defaultMode: 0400
    items:
      - key: {{ .Values.schemaRegistry.passwordKey }}
        path: {{ .Values.schemaRegistry.passwordKey }}
{{- end }}
{{- if .Values.schemaRegistry.caSecret }}
- name: registry-ca
  secret:
    secretName: {{ .Values.schemaRegistry.caSecret }}
{{- end }}
{{- end -}}
