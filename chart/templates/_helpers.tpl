{{/* Names */}}
{{- define "vdbi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "vdbi.fullname" -}}
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

{{- define "vdbi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels. Context: dict root component */}}
{{- define "vdbi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vdbi.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* Common labels. Context: dict root component (component may be "") */}}
{{- define "vdbi.labels" -}}
helm.sh/chart: {{ include "vdbi.chart" .root }}
{{ include "vdbi.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: vdbi
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Values block of a component: injector|renewer|revoker from vaultDbInjector, nri from nri. */}}
{{- define "vdbi.componentValues" -}}
{{- if eq .component "nri" -}}
{{- toYaml .root.Values.nri -}}
{{- else -}}
{{- toYaml (index .root.Values.vaultDbInjector .component) -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount name of a component (Go chart defaults: injector <fullname>). */}}
{{- define "vdbi.serviceAccountName" -}}
{{- $fullname := include "vdbi.fullname" .root -}}
{{- $v := fromYaml (include "vdbi.componentValues" .) -}}
{{- if $v.serviceAccountName -}}
{{- $v.serviceAccountName -}}
{{- else if eq .component "injector" -}}
{{- $fullname -}}
{{- else -}}
{{- printf "%s-%s" $fullname .component -}}
{{- end -}}
{{- end -}}

{{/* Image reference of a component. */}}
{{- define "vdbi.image" -}}
{{- $v := fromYaml (include "vdbi.componentValues" .) -}}
{{- $g := .root.Values.image -}}
{{- $img := $v.image | default dict -}}
{{- $repo := $img.repository | default $g.repository -}}
{{- $tag := $img.tag | default $g.tag | default .root.Chart.AppVersion -}}
{{- if and $g.digest (not $img.repository) -}}
{{- printf "%s@%s" $repo $g.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (toString $tag) -}}
{{- end -}}
{{- end -}}

{{- define "vdbi.pullPolicy" -}}
{{- $v := fromYaml (include "vdbi.componentValues" .) -}}
{{- $v.imagePullPolicy | default .root.Values.image.pullPolicy -}}
{{- end -}}

{{/* admissionTimeout in milliseconds: explicit value or timeoutSeconds - 1s; checked < timeoutSeconds. */}}
{{- define "vdbi.admissionTimeoutMs" -}}
{{- $limit := mul (int .Values.webhook.timeoutSeconds) 1000 -}}
{{- $ms := sub $limit 1000 -}}
{{- with .Values.webhook.admissionTimeout -}}
{{- if hasSuffix "ms" . -}}
{{- $ms = atoi (trimSuffix "ms" .) -}}
{{- else if hasSuffix "s" . -}}
{{- $ms = mul (atoi (trimSuffix "s" .)) 1000 -}}
{{- else -}}
{{- fail (printf "webhook.admissionTimeout %q: use seconds or milliseconds, e.g. 4s or 3500ms" .) -}}
{{- end -}}
{{- end -}}
{{- if or (le (int $ms) 0) (ge (int $ms) (int $limit)) -}}
{{- fail (printf "webhook.admissionTimeout (%dms) must be above 0 and below webhook.timeoutSeconds (%ds): the apiserver would give up before vdbi does, and credentials issued meanwhile would be orphaned" (int $ms) (int .Values.webhook.timeoutSeconds)) -}}
{{- end -}}
{{- $ms -}}
{{- end -}}

{{- define "vdbi.admissionTimeout" -}}
{{- $ms := int (include "vdbi.admissionTimeoutMs" .) -}}
{{- if eq (mod $ms 1000) 0 -}}
{{- printf "%ds" (div $ms 1000) -}}
{{- else -}}
{{- printf "%dms" $ms -}}
{{- end -}}
{{- end -}}

{{- define "vdbi.nriPluginName" -}}
{{- .Values.nri.pluginName | default (include "vdbi.fullname" .) -}}
{{- end -}}

{{- define "vdbi.nriCacheDir" -}}
{{- printf "/run/%s/nri" (include "vdbi.fullname" .) -}}
{{- end -}}

{{/* Checks that make no sense in JSON schema (cross-value rules). Included by the ConfigMaps. */}}
{{- define "vdbi.validate" -}}
{{- $c := .Values.vaultDbInjector.configuration -}}
{{- if and $c.useProjectedSA (empty $c.tokenRequestAudiences) -}}
{{- fail "vaultDbInjector.configuration.tokenRequestAudiences must not be empty when useProjectedSA is true (an audience-less token could be replayed elsewhere)" -}}
{{- end -}}
{{- if and $c.sentry (not $c.sentryDsnSecret.name) (not $c.sentryDsn) -}}
{{- fail "vaultDbInjector.configuration.sentry is true: set sentryDsnSecret.name (preferred) or sentryDsn" -}}
{{- end -}}
{{- if and $c.vaultCA.configMapName $c.vaultCA.secretName -}}
{{- fail "vaultDbInjector.configuration.vaultCA: set configMapName or secretName, not both" -}}
{{- end -}}
{{- if and (eq .Values.webhook.tls.mode "secret") (not .Values.webhook.tls.secret.name) -}}
{{- fail "webhook.tls.mode is secret: set webhook.tls.secret.name" -}}
{{- end -}}
{{- $gen := .Values.webhook.tls.generate -}}
{{- if and (eq .Values.webhook.tls.mode "generate") (ge (int $gen.renewBeforeDays) (int $gen.certValidityDays)) -}}
{{- fail "webhook.tls.generate.renewBeforeDays must be below certValidityDays (the certificate would be replaced on every upgrade)" -}}
{{- end -}}
{{- if and (eq .Values.webhook.tls.mode "generate") (gt (int $gen.certValidityDays) (int $gen.caValidityDays)) -}}
{{- fail "webhook.tls.generate.certValidityDays must not exceed caValidityDays" -}}
{{- end -}}
{{- $name := include "vdbi.nriPluginName" . -}}
{{- if not (regexMatch "^[a-zA-Z0-9_.+-]+$" $name) -}}
{{- fail (printf "nri.pluginName %q must use only [a-zA-Z0-9_.+-]" $name) -}}
{{- end -}}
{{- $_ := include "vdbi.admissionTimeoutMs" . -}}
{{- include "vdbi.validateImages" . -}}
{{- include "vdbi.validatePorts" . -}}
{{- end -}}

{{/* Listen ports: distinct within a component (vdbi would refuse to start), and across the
components when they share the node's network (hostNetwork: a clash leaves a pod Pending, or
failing to bind). The injector Service's first targetPort, when a number, is the webhook port. */}}
{{- define "vdbi.validatePorts" -}}
{{- $seen := dict -}}
{{- $inj := .Values.vaultDbInjector.injector -}}
{{- $components := list "renewer" "revoker" -}}
{{- if $inj.enabled }}{{ $components = prepend $components "injector" }}{{ end -}}
{{- if .Values.nri.enabled }}{{ $components = append $components "nri" }}{{ end -}}
{{- range $c := $components -}}
{{- $v := ternary $.Values.nri (index $.Values.vaultDbInjector $c) (eq $c "nri") -}}
{{- $path := ternary "nri.containerPorts" (printf "vaultDbInjector.%s.containerPorts" $c) (eq $c "nri") -}}
{{- $mine := dict -}}
{{- range $l := list "webhook" "metrics" "health" -}}
{{- if and (hasKey $v.containerPorts $l) (or (ne $l "webhook") (eq $c "injector")) -}}
{{- $port := toString (int (index $v.containerPorts $l)) -}}
{{- $name := printf "%s.%s" $path $l -}}
{{- with index $mine $port -}}
{{- fail (printf "%s and %s are both %s: each listener of a component needs its own port" . $name $port) -}}
{{- end -}}
{{- $_ := set $mine $port $name -}}
{{- if $.Values.hostNetwork -}}
{{- with index $seen $port -}}
{{- fail (printf "hostNetwork: %s and %s are both %s, and the components share each node's ports: give them distinct containerPorts" . $name $port) -}}
{{- end -}}
{{- $_ := set $seen $port $name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $inj.enabled -}}
{{- $target := (index $inj.ports 0).targetPort -}}
{{- if and $target (not (kindIs "string" $target)) (ne (int $target) (int $inj.containerPorts.webhook)) -}}
{{- fail (printf "vaultDbInjector.injector.ports[0].targetPort (%d) must be vaultDbInjector.injector.containerPorts.webhook (%d), the port the webhook listens on" (int $target) (int $inj.containerPorts.webhook)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The listen keys of a component's config.yaml, only for ports other than vdbi's defaults.
Context: dict root component */}}
{{- define "vdbi.listenConfig" -}}
{{- $v := fromYaml (include "vdbi.componentValues" .) -}}
{{- $p := $v.containerPorts -}}
{{- if and (eq .component "injector") (ne (int $p.webhook) 8443) }}
webhookListen: {{ printf "0.0.0.0:%d" (int $p.webhook) | quote }}
{{- end }}
{{- if ne (int $p.metrics) 8080 }}
metricsListen: {{ printf "0.0.0.0:%d" (int $p.metrics) | quote }}
{{- end }}
{{- if ne (int $p.health) 8888 }}
healthListen: {{ printf "0.0.0.0:%d" (int $p.health) | quote }}
{{- end }}
{{- end -}}

{{/* No silent Go image: a repository named vault-db-injector (the Go chart's image, which a
values file written for vault-db-injector sets per component) is refused, naming each value. */}}
{{- define "vdbi.validateImages" -}}
{{- $go := "(^|/)vault-db-injector$" -}}
{{- $bad := list -}}
{{- $repo := "" -}}
{{- if regexMatch $go (.Values.image.repository | default "") -}}
{{- $bad = append $bad "image.repository" -}}
{{- $repo = .Values.image.repository -}}
{{- end -}}
{{- range $c := list "injector" "renewer" "revoker" "nri" -}}
{{- $v := ternary $.Values.nri (index $.Values.vaultDbInjector $c) (eq $c "nri") -}}
{{- $r := (($v.image | default dict).repository | default "") -}}
{{- if regexMatch $go $r -}}
{{- $bad = append $bad (printf "%s.image.repository" (ternary "nri" (printf "vaultDbInjector.%s" $c) (eq $c "nri"))) -}}
{{- $repo = $r -}}
{{- end -}}
{{- end -}}
{{- if $bad -}}
{{- fail (printf "%s: %q is vault-db-injector's Go image, which does not run vdbi. Delete these values together with their image tags (every component then runs image.repository, vdbi's image) or set them to your vdbi image; see docs/migration.md" (join ", " $bad) $repo) -}}
{{- end -}}
{{- end -}}

{{/* Shared vdbi config keys (a dict rendered by the ConfigMaps). Context: dict root component */}}
{{- define "vdbi.commonConfig" -}}
{{- $c := .root.Values.vaultDbInjector.configuration -}}
vaultAddress: {{ $c.vaultAddress | quote }}
vaultAuthPath: {{ $c.vaultAuthPath | quote }}
vaultSecretName: {{ $c.vaultSecretName | quote }}
vaultSecretPrefix: {{ $c.vaultSecretPrefix | quote }}
tokenTTL: {{ $c.tokenTTL | quote }}
logLevel: {{ $c.logLevel | quote }}
sentry: {{ $c.sentry }}
sentryEnvironment: {{ $c.sentryEnvironment | quote }}
sentrySampleRate: {{ $c.sentrySampleRate }}
injectorLabel: {{ $c.injectorLabel | quote }}
defaultEngine: {{ $c.defaultEngine | quote }}
vaultRateLimit: {{ int $c.vaultRateLimit }}
vaultRateBurst: {{ int $c.vaultRateBurst }}
useProjectedSA: {{ $c.useProjectedSA }}
{{- if $c.tokenRequestAudiences }}
tokenRequestAudiences:
{{- range $c.tokenRequestAudiences }}
  - {{ . | quote }}
{{- end }}
{{- end }}
tokenRequestExpirationSeconds: {{ int64 $c.tokenRequestExpirationSeconds }}
vaultSkipVerify: {{ $c.vaultSkipVerify }}
{{- with $c.vaultNamespace }}
vaultNamespace: {{ . | quote }}
{{- end }}
vaultRequestTimeout: {{ $c.vaultRequestTimeout | quote }}
perUuidMetrics: {{ $c.perUuidMetrics }}
{{- with $c.podWatchBrokenAfter }}
podWatchBrokenAfter: {{ . | quote }}
{{- end }}
{{- if or $c.vaultCA.configMapName $c.vaultCA.secretName }}
vaultCACert: {{ printf "/vault-ca/%s" $c.vaultCA.key | quote }}
{{- end }}
{{- end -}}

{{/* Volumes and mounts shared by every component: config, /tmp, optional Vault CA. */}}
{{- define "vdbi.commonVolumes" -}}
- name: config
  configMap:
    name: {{ printf "%s-%s" (include "vdbi.fullname" .root) .component }}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- $ca := .root.Values.vaultDbInjector.configuration.vaultCA }}
{{- if $ca.configMapName }}
- name: vault-ca
  configMap:
    name: {{ $ca.configMapName }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- else if $ca.secretName }}
- name: vault-ca
  secret:
    secretName: {{ $ca.secretName }}
    items:
      - key: {{ $ca.key }}
        path: {{ $ca.key }}
{{- end }}
{{- end -}}

{{- define "vdbi.commonVolumeMounts" -}}
- name: config
  mountPath: {{ printf "/%s" .component }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- $ca := .root.Values.vaultDbInjector.configuration.vaultCA }}
{{- if or $ca.configMapName $ca.secretName }}
- name: vault-ca
  mountPath: /vault-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/* Env shared by every component: the Sentry DSN from a Secret (never a ConfigMap). */}}
{{- define "vdbi.sentryEnv" -}}
{{- $c := .Values.vaultDbInjector.configuration -}}
{{- if $c.sentry }}
- name: INJECTOR_SENTRY_DSN
  valueFrom:
    secretKeyRef:
      {{- if $c.sentryDsnSecret.name }}
      name: {{ $c.sentryDsnSecret.name }}
      key: {{ $c.sentryDsnSecret.key }}
      {{- else }}
      name: {{ include "vdbi.fullname" . }}-sentry
      key: dsn
      {{- end }}
{{- end }}
{{- end -}}

{{/* Probes on the health port (8888): /healthz never fails because Vault is down. */}}
{{- define "vdbi.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: health
  initialDelaySeconds: 10
  periodSeconds: 20
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: health
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
{{- end -}}

{{/* Pod annotations: config checksum (config changes roll the pods) and prometheus.io/*. */}}
{{- define "vdbi.podAnnotations" -}}
checksum/config: {{ .checksum }}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .values.containerPorts.metrics | int | toString | quote }}
{{- end }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Affinity: explicit value, else anti-affinity by hostname (soft|hard|none). */}}
{{- define "vdbi.affinity" -}}
{{- if .values.affinity -}}
{{ toYaml .values.affinity }}
{{- else if eq .values.antiAffinity "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "vdbi.selectorLabels" (dict "root" .root "component" .component) | nindent 10 }}
{{- else if eq .values.antiAffinity "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "vdbi.selectorLabels" (dict "root" .root "component" .component) | nindent 12 }}
{{- end -}}
{{- end -}}

{{/* The config.yaml of a component. Context: dict root component */}}
{{- define "vdbi.configYaml" -}}
{{- $root := .root -}}
{{- $c := $root.Values.vaultDbInjector.configuration -}}
{{- $nri := $root.Values.nri -}}
# vdbi configuration for the {{ .component }} component, rendered by the chart.
# Every key is a vdbi config key (vdbi warns on unknown keys). The Sentry DSN is not here: it
# comes from a Secret as INJECTOR_SENTRY_DSN.
mode: {{ .component }}
{{- if eq .component "injector" }}
kubeRole: {{ $c.kubeRole | quote }}
certFile: /tls/tls.crt
keyFile: /tls/tls.key
admissionTimeout: {{ include "vdbi.admissionTimeout" $root | quote }}
{{- with $root.Values.vaultDbInjector.injector.config }}
{{- if hasKey . "webhookMaxBodyBytes" }}
webhookMaxBodyBytes: {{ int64 .webhookMaxBodyBytes }}
{{- end }}
{{- if .certReloadInterval }}
certReloadInterval: {{ .certReloadInterval | quote }}
{{- end }}
{{- if hasKey . "maxDbConfigsPerPod" }}
maxDbConfigsPerPod: {{ int64 .maxDbConfigsPerPod }}
{{- end }}
{{- if hasKey . "maxAnnotationBytes" }}
maxAnnotationBytes: {{ int64 .maxAnnotationBytes }}
{{- end }}
{{- if .readinessVaultGrace }}
readinessVaultGrace: {{ .readinessVaultGrace | quote }}
{{- end }}
{{- end }}
{{- with $root.Values.vaultDbInjector.injector.clientAuth }}
{{- if .enabled }}
webhookClientCAFile: {{ printf "/client-ca/%s" .caKey | quote }}
{{- with .allowedNames }}
webhookClientAllowedNames:
{{- range . }}
  - {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- else if eq .component "renewer" }}
kubeRole: {{ $c.kubeRoleRenewer | default $c.kubeRole | quote }}
syncTTLSecond: {{ int64 $c.syncTTLSecond }}
{{- with $root.Values.vaultDbInjector.renewer.config }}
{{- if hasKey . "renewerConcurrency" }}
renewerConcurrency: {{ int64 .renewerConcurrency }}
{{- end }}
{{- if hasKey . "renewHorizonCycles" }}
renewHorizonCycles: {{ int64 .renewHorizonCycles }}
{{- end }}
{{- end }}
{{- else if eq .component "revoker" }}
kubeRole: {{ $c.kubeRoleRevoker | default $c.kubeRole | quote }}
{{- with $root.Values.vaultDbInjector.revoker.config }}
{{- if hasKey . "revokeTerminatedPods" }}
revokeTerminatedPods: {{ .revokeTerminatedPods }}
{{- end }}
{{- if .revokerSweepInterval }}
revokerSweepInterval: {{ .revokerSweepInterval | quote }}
{{- end }}
{{- if .revokerUnseenGrace }}
revokerUnseenGrace: {{ .revokerUnseenGrace | quote }}
{{- end }}
{{- if .orphanLeaseGrace }}
orphanLeaseGrace: {{ .orphanLeaseGrace | quote }}
{{- end }}
{{- with .orphanLeaseDiscovery }}
orphanLeaseDiscovery: {{ . | quote }}
{{- end }}
{{- with .orphanLeaseRoles }}
orphanLeaseRoles:
{{- range . }}
  - {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- else if eq .component "nri" }}
kubeRole: {{ $c.kubeRoleNri | default $c.kubeRole | quote }}
{{- with $c.kubeRoleNri }}
kubeRoleNri: {{ . | quote }}
{{- end }}
{{- end }}
{{- include "vdbi.listenConfig" . }}
{{ include "vdbi.commonConfig" . }}
nri:
  enabled: {{ $nri.enabled }}
{{- if eq .component "nri" }}
  socketPath: {{ printf "%s/nri.sock" (trimSuffix "/" $nri.socketDir) | quote }}
  cachePath: {{ printf "%s/cache.json" (include "vdbi.nriCacheDir" $root) | quote }}
  pluginName: {{ include "vdbi.nriPluginName" $root | quote }}
  pluginIndex: {{ $nri.pluginIndex | quote }}
  podLabel: {{ $c.webhookMatchLabels | quote }}
  fetchTimeout: {{ $nri.fetchTimeout | quote }}
  sweepInterval: {{ $nri.sweepInterval | quote }}
  prewarmer:
    enabled: {{ $nri.prewarmer.enabled }}
    maxConcurrent: {{ int64 $nri.prewarmer.maxConcurrent }}
{{- end }}
{{- end -}}

{{- define "vdbi.tlsSecretName" -}}
{{- if eq .Values.webhook.tls.mode "secret" -}}
{{- .Values.webhook.tls.secret.name -}}
{{- else -}}
{{- printf "%s-tls" (include "vdbi.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
Generated webhook certificate: reuse the Secret found in the cluster unless it is missing,
incomplete, for other DNS names, or within renewBeforeDays of expiry. Returns YAML with
base64 crt/key/ca, notAfter and previousCA (base64 PEM of the CA being replaced, or "").
The result is memoised in .Values so the Secret and the MWC see the same certificate.
*/}}
{{- define "vdbi.generatedTLS" -}}
{{- if not (hasKey .Values "__vdbiGeneratedTLS") -}}
{{- $fullname := include "vdbi.fullname" . -}}
{{- $g := .Values.webhook.tls.generate -}}
{{- $ns := .Release.Namespace -}}
{{- $dns := list $fullname (printf "%s.%s" $fullname $ns) (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.cluster.local" $fullname $ns) -}}
{{- $dns = concat $dns ($g.extraDnsNames | default list) -}}
{{- $ips := $g.ipAddresses | default list -}}
{{- $dnsKey := join "," (concat $dns $ips) | sha256sum | trunc 16 -}}
{{- $existing := lookup "v1" "Secret" $ns (printf "%s-tls" $fullname) -}}
{{- $out := dict -}}
{{- $previousCA := "" -}}
{{- if and $existing $existing.data -}}
{{- $notAfter := dig "metadata" "annotations" "vdbi/cert-not-after" "" $existing -}}
{{- $forNames := dig "metadata" "annotations" "vdbi/cert-dns" "" $existing -}}
{{- $renewAt := now | dateModify (printf "+%dh" (mul (int $g.renewBeforeDays) 24)) -}}
{{- $valid := and (index $existing.data "tls.crt") (index $existing.data "tls.key") (index $existing.data "ca.crt") $notAfter -}}
{{- if $valid -}}
{{- $valid = and (eq $forNames $dnsKey) (lt (int64 (unixEpoch $renewAt)) (int64 (unixEpoch (toDate "2006-01-02T15:04:05Z07:00" $notAfter)))) -}}
{{- end -}}
{{- if $valid -}}
{{- $out = dict "crt" (index $existing.data "tls.crt") "key" (index $existing.data "tls.key") "ca" (index $existing.data "ca.crt") "notAfter" $notAfter "previousCA" "" -}}
{{- else if index $existing.data "ca.crt" -}}
{{- $previousCA = index $existing.data "ca.crt" -}}
{{- end -}}
{{- end -}}
{{- if not $out -}}
{{- $ca := genCA (printf "%s-ca" $fullname) (int $g.caValidityDays) -}}
{{- $days := int $g.certValidityDays -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $fullname $ns) $ips $dns $days $ca -}}
{{- $notAfter := now | dateModify (printf "+%dh" (mul $days 24)) | date "2006-01-02T15:04:05Z07:00" -}}
{{- $out = dict "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) "ca" ($ca.Cert | b64enc) "notAfter" $notAfter "previousCA" $previousCA -}}
{{- end -}}
{{- $_ := set $out "dnsKey" $dnsKey -}}
{{- $_ := set .Values "__vdbiGeneratedTLS" $out -}}
{{- end -}}
{{- toYaml (get .Values "__vdbiGeneratedTLS") -}}
{{- end -}}

{{/* caBundle (base64) for the MWC, or "" when cert-manager injects it. */}}
{{- define "vdbi.caBundle" -}}
{{- $tls := .Values.webhook.tls -}}
{{- if eq $tls.mode "generate" -}}
{{- $s := include "vdbi.generatedTLS" . | fromYaml -}}
{{- if $s.previousCA -}}
{{- printf "%s%s" ($s.ca | b64dec) ($s.previousCA | b64dec) | b64enc -}}
{{- else -}}
{{- $s.ca -}}
{{- end -}}
{{- else if eq $tls.mode "secret" -}}
{{- with $tls.secret.caBundle -}}
{{- . | b64enc -}}
{{- end -}}
{{- end -}}
{{- end -}}
