{{- define "squall.fullname" -}}
{{- printf "%s-squall" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "squall.labels" -}}
app.kubernetes.io/name: squall
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "squall.selector" -}}
app.kubernetes.io/name: squall
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{/* Settings that come from Secrets: never written into the ConfigMap. */}}
{{- define "squall.secretEnv" -}}
{{- $k := .Values.kafka.sasl -}}
{{- if and $k.existingSecret $k.usernameKey }}
- name: SQUALL_KAFKA_SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ $k.existingSecret }}, key: {{ $k.usernameKey }}}}
{{- end }}
{{- if and $k.existingSecret $k.passwordKey }}
- name: SQUALL_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $k.existingSecret }}, key: {{ $k.passwordKey }}}}
{{- end }}
{{- if and $k.existingSecret $k.jaasKey }}
- name: SQUALL_KAFKA_SASL_JAAS_CONFIG
  valueFrom: {secretKeyRef: {name: {{ $k.existingSecret }}, key: {{ $k.jaasKey }}}}
{{- end }}
{{- $e := .Values.etcd.auth -}}
{{- if $e.existingSecret }}
- name: SQUALL_ETCD_USERNAME
  valueFrom: {secretKeyRef: {name: {{ $e.existingSecret }}, key: {{ $e.usernameKey }}}}
- name: SQUALL_ETCD_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $e.existingSecret }}, key: {{ $e.passwordKey }}}}
{{- end }}
{{- with .Values.stores.entity }}
{{- if .existingSecret }}
- name: SQUALL_ENTITY_STORE
  valueFrom: {secretKeyRef: {name: {{ .existingSecret }}, key: {{ .key }}}}
{{- end }}
{{- end }}
{{- with .Values.stores.activation }}
{{- if .existingSecret }}
- name: SQUALL_ACTIVATION_STORE
  valueFrom: {secretKeyRef: {name: {{ .existingSecret }}, key: {{ .key }}}}
{{- end }}
{{- end }}
{{- if .Values.guestAuth.existingSecret }}
- name: SQUALL_GUEST_AUTH
  valueFrom: {secretKeyRef: {name: {{ .Values.guestAuth.existingSecret }}, key: {{ .Values.guestAuth.key }}}}
{{- end }}
{{- end -}}

{{- define "squall.container" -}}
- name: {{ .name }}
  image: "{{ .root.Values.image.repository }}:{{ .root.Values.image.tag }}"
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args: {{ toJson .args }}
  envFrom:
    - configMapRef: {name: {{ include "squall.fullname" .root }}}
  env:
    - name: SQUALL_PORT
      value: {{ .root.Values.port | quote }}
    {{- if eq .root.Values.mode "cluster" }}
    # A member is its pod: its name is the member id, its IP where the others reach it.
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: SQUALL_CLUSTER_ID
      value: "$(POD_NAME)"
    - name: SQUALL_CLUSTER_URL
      value: "http://$(POD_IP):{{ .root.Values.port }}"
    {{- with .root.Values.cluster.token }}
    - name: SQUALL_CLUSTER_TOKEN
      valueFrom: {secretKeyRef: {name: {{ .existingSecret }}, key: {{ .key }}}}
    {{- end }}
    {{- end }}
    {{- include "squall.secretEnv" .root | nindent 4 }}
  {{- if .probes }}
  ports:
    - {name: http, containerPort: {{ .root.Values.port }}}
  livenessProbe:
    httpGet: {path: /healthz, port: http}
    periodSeconds: 10
    failureThreshold: 3
  readinessProbe:
    httpGet: {path: /readyz, port: http}
    periodSeconds: 5
    failureThreshold: 2
  {{- end }}
  resources: {{ toJson .root.Values.resources }}
  securityContext: {{ toJson .root.Values.securityContext }}
  volumeMounts:
    - {name: data, mountPath: /var/lib/squall}
    - {name: tmp, mountPath: /tmp}
    {{- if .root.Values.kafka.tls.caSecret }}
    - {name: kafka-ca, mountPath: /etc/squall/kafka-ca, readOnly: true}
    {{- end }}
{{- end -}}

{{- define "squall.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  {{- if and .persistent (eq .root.Values.mode "standalone") .root.Values.persistence.enabled }}
  persistentVolumeClaim: {claimName: {{ include "squall.fullname" .root }}-data}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- if .root.Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .root.Values.kafka.tls.caSecret }}
    items: [{key: {{ .root.Values.kafka.tls.caKey }}, path: ca.crt}]
{{- end }}
{{- end -}}
