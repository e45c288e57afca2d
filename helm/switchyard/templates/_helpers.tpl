{{/*
Names and labels shared by every template, and the policy document the gateway reads.
*/}}

{{/* The chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every resource name: "<release>-<chart>", or the release alone when it
already contains the chart name. */}}
{{- define "switchyard.fullname" -}}
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

{{/* Component names, kept short enough that pod names (StatefulSet ordinals) stay valid. */}}
{{- define "switchyard.redisName" -}}
{{- printf "%s-redis" (include "switchyard.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{- define "switchyard.sglangName" -}}
{{- printf "%s-sglang" (include "switchyard.fullname" . | trunc 40 | trimSuffix "-") -}}
{{- end -}}

{{- define "switchyard.sglangHeadlessName" -}}
{{- printf "%s-headless" (include "switchyard.sglangName" .) -}}
{{- end -}}

{{- define "switchyard.secretName" -}}
{{- default (include "switchyard.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* Whether the gateway gets its environment from a Secret (its own or an existing one). */}}
{{- define "switchyard.hasSecret" -}}
{{- if or .Values.existingSecret .Values.secrets -}}true{{- end -}}
{{- end -}}

{{- define "switchyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource; pass a dict with "ctx" (the root) and "component". */}}
{{- define "switchyard.labels" -}}
helm.sh/chart: {{ include "switchyard.chart" .ctx }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: switchyard
{{- end -}}

{{/* Labels that select one component's pods; never change them in an upgrade, selectors
of Deployments and StatefulSets are immutable. */}}
{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* REDIS_URL for the gateway: the bundled Redis's Service, an existing URL, or nothing. */}}
{{- define "switchyard.redisUrl" -}}
{{- if and .Values.redis.bundled.enabled .Values.redis.url -}}
{{- fail "redis.url and redis.bundled.enabled are exclusive: use an existing Redis or the bundled one, not both" -}}
{{- end -}}
{{- if .Values.redis.bundled.enabled -}}
{{- printf "redis://%s:6379/0" (include "switchyard.redisName" .) -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{/* Base URLs of the SGLang StatefulSet's pods, one per replica, as a YAML list. */}}
{{- define "switchyard.sglangWorkers" -}}
{{- $sts := include "switchyard.sglangName" . -}}
{{- $svc := include "switchyard.sglangHeadlessName" . -}}
{{- $workers := list -}}
{{- range $i := until (int .Values.sglang.replicas) -}}
{{- $workers = append $workers (printf "http://%s-%d.%s:30000" $sts $i $svc) -}}
{{- end -}}
{{- toYaml $workers -}}
{{- end -}}

{{/*
How the policy's pool finds the StatefulSet's pods (sglang.discovery.mode): "dns" re-resolves the
headless Service's A/AAAA records, "kubernetes" watches its EndpointSlices (with the RBAC in
rbac.yaml), "static" lists one URL per replica (a scale change then needs a policy change).
*/}}
{{- define "switchyard.sglangMembers" -}}
{{- $ctx := .ctx -}}
{{- $backend := .backend -}}
{{- $mode := $ctx.Values.sglang.discovery.mode -}}
{{- $svc := include "switchyard.sglangHeadlessName" $ctx -}}
{{- if eq $mode "static" -}}
{{- $_ := set $backend "workers" (include "switchyard.sglangWorkers" $ctx | fromYamlArray) -}}
{{- $_ = unset $backend "discovery" -}}
{{- else if eq $mode "dns" -}}
{{- $name := printf "%s.%s.svc.%s" $svc $ctx.Release.Namespace $ctx.Values.sglang.discovery.clusterDomain -}}
{{- $_ := set $backend "workers" (list) -}}
{{- $_ = set $backend "discovery" (dict "type" "dns" "name" $name "port" 30000 "interval_s" $ctx.Values.sglang.discovery.intervalS) -}}
{{- else if eq $mode "kubernetes" -}}
{{- $_ := set $backend "workers" (list) -}}
{{- $_ = set $backend "discovery" (dict "type" "kubernetes" "service" $svc "namespace" $ctx.Release.Namespace "port_name" "http") -}}
{{- else -}}
{{- fail (printf "sglang.discovery.mode %q: one of dns, kubernetes, static" $mode) -}}
{{- end -}}
{{- end -}}

{{/* Whether the gateway watches the Kubernetes API (and so needs a token and the RBAC). */}}
{{- define "switchyard.watchesApi" -}}
{{- if and .Values.sglang.enabled (eq .Values.sglang.discovery.mode "kubernetes") -}}true{{- end -}}
{{- end -}}

{{/* The gateway's ServiceAccount: the given one, or the chart's own in the API mode. */}}
{{- define "switchyard.serviceAccount" -}}
{{- default (include "switchyard.fullname" .) .Values.serviceAccountName -}}
{{- end -}}

{{/* The served model name of the SGLang workers (what the gateway sends upstream). */}}
{{- define "switchyard.sglangServedName" -}}
{{- default .Values.sglang.modelPath .Values.sglang.servedModelName -}}
{{- end -}}

{{/*
The policy document as YAML: values.policy (files/default-policy.yaml when it is empty), plus,
when the SGLang StatefulSet is enabled, its workers merged into the backend
sglang.policyBackend (and sglang.policyModel added). Works on a deep copy so that .Values
stays as the user gave it.
*/}}
{{- define "switchyard.policy" -}}
{{- $given := .Values.policy | default (.Files.Get "files/default-policy.yaml" | fromYaml) -}}
{{- if not (kindIs "map" $given) -}}
{{- fail "policy must be a mapping: the gateway's policy document (see values.yaml)" -}}
{{- end -}}
{{- $policy := deepCopy $given -}}
{{- if .Values.sglang.enabled -}}
{{- $name := required "sglang.policyBackend is required when sglang.enabled" .Values.sglang.policyBackend -}}
{{- if lt (int .Values.sglang.replicas) 1 -}}
{{- fail "sglang.replicas must be at least 1 when sglang.enabled: the policy's pool needs a worker" -}}
{{- end -}}
{{- $backends := default (dict) $policy.backends -}}
{{- $backend := default (dict) (get $backends $name) -}}
{{- if and $backend.kind (ne $backend.kind "sglang") -}}
{{- fail (printf "policy.backends.%s has kind %q, but sglang.policyBackend names it: the StatefulSet's pool must be of kind sglang" $name $backend.kind) -}}
{{- end -}}
{{- $_ := set $backend "kind" "sglang" -}}
{{- include "switchyard.sglangMembers" (dict "ctx" . "backend" $backend) -}}
{{- with .Values.sglang.apiKey.secretKey -}}
{{- if not (regexMatch "^[A-Za-z_][A-Za-z0-9_]*$" .) -}}
{{- fail (printf "sglang.apiKey.secretKey %q: a key of the gateway's Secret, which becomes an environment variable name (letters, digits, _)" .) -}}
{{- end -}}
{{- if not (include "switchyard.hasSecret" $) -}}
{{- fail (printf "sglang.apiKey.secretKey %q names a key of the gateway's Secret, but there is none: set secrets.%s or existingSecret" . .) -}}
{{- end -}}
{{- if and $.Values.secrets (not $.Values.existingSecret) (not (hasKey $.Values.secrets .)) -}}
{{- fail (printf "sglang.apiKey.secretKey %q is not a key of secrets" .) -}}
{{- end -}}
{{- if and $backend.api_key_env (ne $backend.api_key_env .) -}}
{{- fail (printf "policy.backends.%s.api_key_env is %q but sglang.apiKey.secretKey is %q: the gateway must send the key the workers require" $name $backend.api_key_env .) -}}
{{- end -}}
{{- $_ = set $backend "api_key_env" . -}}
{{- end -}}
{{- $_ = set $backends $name $backend -}}
{{- $_ = set $policy "backends" $backends -}}
{{- $models := default (dict) $policy.models -}}
{{- if and .Values.sglang.policyModel (not (hasKey $models .Values.sglang.policyModel)) -}}
{{- $deployment := dict "backend" $name "model" (include "switchyard.sglangServedName" .) -}}
{{- $_ = set $models .Values.sglang.policyModel (dict "deployments" (list $deployment)) -}}
{{- $_ = set $policy "models" $models -}}
{{- end -}}
{{- $used := false -}}
{{- range $model := $models -}}
{{- range $deployment := (default (list) $model.deployments) -}}
{{- if eq $deployment.backend $name -}}{{- $used = true -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- if not $used -}}
{{- fail (printf "sglang.enabled, but no model in policy.models has a deployment on backend %q: set sglang.policyModel, or add a deployment {backend: %s, model: %s} to a model" $name $name (include "switchyard.sglangServedName" .)) -}}
{{- end -}}
{{- end -}}
{{- toYaml $policy -}}
{{- end -}}
