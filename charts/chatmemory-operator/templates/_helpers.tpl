{{/*
Names and labels shared by every template, and the checks that fail fast on invalid values.
*/}}

{{/* The chart name, overridable. */}}
{{- define "chatmemory.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name used for objects: <release>-<chart>, or the release name if it holds the chart name. */}}
{{- define "chatmemory.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version */}}
{{- define "chatmemory.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "chatmemory.labels" -}}
helm.sh/chart: {{ include "chatmemory.chart" . }}
{{ include "chatmemory.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chatmemory
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the operator pod (stable across upgrades). */}}
{{- define "chatmemory.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chatmemory.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "chatmemory.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chatmemory.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository:tag or repository@digest. */}}
{{- define "chatmemory.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The watched namespaces, comma-joined for CHATMEMORY_WATCH_NAMESPACES (empty: all). */}}
{{- define "chatmemory.watchNamespaces" -}}
{{- join "," (uniq .Values.watchNamespaces) }}
{{- end }}

{{/*
Namespaces besides the release namespace where stores' admin and CA Secrets may live (globs
allowed): storeSecretNamespaces plus the deprecated rbac.secretNamespaces, comma-joined for
CHATMEMORY_STORE_SECRET_NAMESPACES. The operator refuses a store whose Secret lives elsewhere.
*/}}
{{- define "chatmemory.storeSecretNamespaces" -}}
{{- $out := list }}
{{- range (concat .Values.storeSecretNamespaces .Values.rbac.secretNamespaces) }}
{{- if ne . $.Release.Namespace }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- join "," (uniq $out) }}
{{- end }}

{{/*
Namespaces where the operator may read stores' Secrets in namespaced mode (a Role in each): the
release namespace (the operator's own) and the namespaces above, exactly what the operator allows.
Returned as a comma-joined string.
*/}}
{{- define "chatmemory.secretNamespaces" -}}
{{- $out := list .Release.Namespace }}
{{- range splitList "," (include "chatmemory.storeSecretNamespaces" .) }}
{{- if . }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- join "," (uniq $out) }}
{{- end }}

{{/*
"true" when namespace .name matches the fnmatch glob .pattern (as the operator matches
CHATMEMORY_STORE_SECRET_NAMESPACES: `*`, `?`, `[...]`, `[!...]`), else "".
*/}}
{{- define "chatmemory.globMatch" -}}
{{- $re := regexQuoteMeta .pattern | replace "\\*" ".*" | replace "\\?" "." | replace "\\[!" "[^" | replace "\\[" "[" | replace "\\]" "]" }}
{{- if regexMatch (printf "^%s$" $re) .name }}true{{ end }}
{{- end }}

{{/* "true" when the operator allows a store's Secret in namespace .name (.root: the chart context). */}}
{{- define "chatmemory.storeSecretAllowed" -}}
{{- $allowed := eq .name .root.Release.Namespace }}
{{- range splitList "," (include "chatmemory.storeSecretNamespaces" .root) }}
{{- if and . (include "chatmemory.globMatch" (dict "pattern" . "name" $.name)) }}{{ $allowed = true }}{{ end }}
{{- end }}
{{- if $allowed }}true{{ end }}
{{- end }}

{{/*
"true" when the operator's replicas take turns through a Lease: always with 2 or more replicas
(two active operators would both handle every ChatMemory), on request with one.
*/}}
{{- define "chatmemory.leaderElection" -}}
{{- if or .Values.operator.leaderElection.enabled (gt (int .Values.operator.replicas) 1) }}true{{ end }}
{{- end }}

{{/* Fail fast on combinations that cannot work. */}}
{{- define "chatmemory.validate" -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled: the ServiceMonitor selects the metrics Service" }}
{{- end }}
{{- range .Values.stores }}
{{- $kinds := 0 }}
{{- if .redis }}{{ $kinds = add1 $kinds }}{{ end }}
{{- if .kafka }}{{ $kinds = add1 $kinds }}{{ end }}
{{- if .tidb }}{{ $kinds = add1 $kinds }}{{ end }}
{{- if ne (int $kinds) 1 }}
{{- fail (printf "stores[%s]: set exactly one of redis, kafka, tidb" .name) }}
{{- end }}
{{- end }}
{{- range $store := .Values.stores }}
{{- range $kind := list "redis" "kafka" "tidb" }}
{{- with (get $store $kind) }}
{{- $refs := list }}
{{- with .adminSecretRef }}{{ $refs = append $refs (list "adminSecretRef" (default $.Release.Namespace .namespace)) }}{{ end }}
{{- with .tls }}{{ with .caSecretRef }}{{ $refs = append $refs (list "tls.caSecretRef" (default $.Release.Namespace .namespace)) }}{{ end }}{{ end }}
{{- range $refs }}
{{- if not (include "chatmemory.storeSecretAllowed" (dict "root" $ "name" (index . 1))) }}
{{- fail (printf "stores[%s]: %s.%s.namespace %q is neither the release namespace (%s) nor in storeSecretNamespaces: the operator would refuse the store; add %q to storeSecretNamespaces" $store.name $kind (index . 0) (index . 1) $.Release.Namespace (index . 1)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.rbac.create .Values.watchNamespaces }}
{{- range (concat .Values.storeSecretNamespaces .Values.rbac.secretNamespaces) }}
{{- if regexMatch "[*?\\[\\]!]" . }}
{{- fail (printf "storeSecretNamespaces: %q is a glob; with watchNamespaces the chart grants Secret reads with a Role per namespace, so name each namespace" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- $defaults := 0 }}
{{- range .Values.stores }}{{ if .default }}{{ $defaults = add1 $defaults }}{{ end }}{{ end }}
{{- if gt (int $defaults) 1 }}
{{- fail "stores: at most one store may be marked default: true" }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced objects the operator touches (a ClusterRole, or a Role per watched
namespace). Exactly the calls it makes: kopf lists, watches and patches ChatMemories (finalizer,
progress annotations) and patches their status subresource; the operator reads, creates, replaces
and deletes each memory's Secret (chatmemory_operator.k8s); the Secret's ownerReference sets
blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement admission plugin allows only
with update on the owner's finalizers subresource; kopf and the operator post Events.
*/}}
{{- define "chatmemory.rules.namespaced" -}}
- apiGroups: ["chatmemory.io"]
  resources: ["chatmemories"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["chatmemory.io"]
  resources: ["chatmemories/status"]
  verbs: ["patch"]
- apiGroups: ["chatmemory.io"]
  resources: ["chatmemories/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "update", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
RBAC rules for what is cluster-scoped: kopf lists, watches and patches ChatMemoryStores and their
status, and the operator gets one by name (a memory's storeRef); the operator gets a ChatMemory by
name in any namespace (whether the holder of a name claim still exists); kopf discovers resources
by watching CRDs; the operator reads namespaces' labels (a store's spec.allowedNamespaces
selector), and with a namespace list kopf lists and watches namespaces.
*/}}
{{- define "chatmemory.rules.cluster" -}}
- apiGroups: ["chatmemory.io"]
  resources: ["chatmemorystores"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["chatmemory.io"]
  resources: ["chatmemorystores/status"]
  verbs: ["patch"]
- apiGroups: ["chatmemory.io"]
  resources: ["chatmemories"]
  verbs: ["get"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/*
RBAC rules in the operator's own namespace: name claims (which memory owns a key prefix, topic or
database) are coordination.k8s.io Leases named cm-claim-<hash>, created, read, listed by label,
renewed and released there (chatmemory_operator.k8s); with leader election the replicas also read,
create, update (renew, take over) and delete (release) the Lease named like the release.
*/}}
{{- define "chatmemory.rules.claims" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
{{- end }}
