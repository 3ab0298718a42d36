{{- define "kiln.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kiln.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
What selects the operator's own pods and Service. The operator labels an LLMService's objects
app.kubernetes.io/name=kiln and app.kubernetes.io/instance=<the service's name>
(kiln/render/meta.py), so a service named like the release, in its namespace, carries
kiln.selectorLabels too; no object of a service is labelled component=operator. The
Deployment's own selector stays kiln.selectorLabels: it is immutable, and a service's pods
are each owned by their own ReplicaSet, which the operator's Deployment does not adopt.
*/}}
{{- define "kiln.operatorSelectorLabels" -}}
{{ include "kiln.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
A Service's name: a DNS-1035 label (a letter first, no dots, at most 63 characters), which
Helm does not require of a release name. Called with the root context as "root" and what
follows the release's full name as "suffix".
*/}}
{{- define "kiln.serviceName" -}}
{{- $base := include "kiln.fullname" .root | trunc (int (sub 62 (len .suffix))) | trimSuffix "-" -}}
{{- $name := printf "%s-%s" $base .suffix -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "release name %q gives the Service name %q, which Kubernetes refuses (a Service's name is a DNS-1035 label: a lowercase letter first, then letters, digits and '-', no dots): install under a release name that starts with a letter and has no dots" .root.Release.Name $name) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/*
The Lease that elects one operator of the release (kiln run --leader-election-name): two
releases in one namespace elect theirs apart. The release kiln takes kiln-operator.
*/}}
{{- define "kiln.leaseName" -}}
{{- printf "%s-operator" (include "kiln.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{/*
Cluster-scoped objects (the ClusterRole and its binding): one release name may be installed
in several namespaces, each with rights of its own. A colon, which neither a release name nor
a namespace holds, keeps kiln in team-a apart from kiln-team in a (RBAC names are path
segments, as system:node is).
*/}}
{{- define "kiln.clusterName" -}}
{{- printf "%s:%s" (include "kiln.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The operator's image (the model-list server runs it too): by digest when one is given. */}}
{{- define "kiln.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kiln.labels" -}}
{{ include "kiln.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kiln.modelListName" -}}
{{- include "kiln.serviceName" (dict "root" . "suffix" "model-list") -}}
{{- end -}}

{{- define "kiln.modelListLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-model-list
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: model-list
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kiln.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kiln.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does in a namespace with LLMServices. Exactly the calls it makes
(tests/integration/test_rbac.py checks these rules against an audit of the operator's
requests): kopf watches and patches LLMServices (finalizer, progress annotations) and posts
Events; it lists and watches the Jobs, Deployments, Services and ServiceAccounts Kiln owns
(the reconcile and the builtin autoscaler read those from memory, kiln/controller/cache.py),
and gets one by name when the cache has no such object, to make sure no one else's object
has that name (kiln/controller/ownership.py); the reconcile creates build Jobs (a plain
create, so that of several services wanting one engine exactly one starts its build), patches
a build Job's owner references (every service waiting on a build is one of its owners, so that
deleting one leaves the build to the others: kiln/decide/engine.py), and deletes one that no
service wants any more (kiln/controller/collect.py), lists the
namespace's LLMServices to know which engines they want, and server-side-applies the other kinds and the autoscaler objects (an apply is authorized as create when the object is absent and as patch
when it exists, so every applied kind needs both) and deletes the ones a service controls that its spec no longer asks for (a scaler
after a change of autoscaling.mode, a disabled NetworkPolicy, a removed gateway, the workload of the other kind: kiln/decide/decide.py
``_prune``), reads the model-credential Secrets by name (modelCredentials.secretNames, nothing else),
and lists and watches the serving pods to scrape their metrics (a watch-fed cache: controller/cache.py);
it lists the Events of a build Job that has no pod, to say why the namespace refuses it
(controller/gather.py). Nothing here reaches pods/exec, Roles or
RoleBindings: those are kiln.multiNodeRules, granted only in multiNode.namespaces.
*/}}
{{- define "kiln.namespacedRules" -}}
- apiGroups: [serving.kiln.dev]
  resources: [llmservices]
  verbs: [list, watch, patch]
- apiGroups: [serving.kiln.dev]
  resources: [llmservices/status]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, get, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, get, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, get, create, patch, delete]
{{- with .Values.modelCredentials.secretNames }}
- apiGroups: [""]
  resources: [secrets]
  resourceNames: {{ toJson . }}
  verbs: [get]
{{- end }}
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, create, patch, delete]
- apiGroups: [http.keda.sh]
  resources: [httpscaledobjects]
  verbs: [get, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, patch, delete]
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [list, watch, get, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, get, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, get, create, patch, delete]
{{- end -}}

{{/*
Multi-node services only, in multiNode.namespaces only: a multi-node service's leader gets a
Role for `kubectl exec` into its own group's worker pods (by name), and Kubernetes lets the
operator create a Role only with rights it holds itself. The operator never execs into a pod.
*/}}
{{- define "kiln.multiNodeRules" -}}
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get]
- apiGroups: [""]
  resources: [pods/exec]
  verbs: [create, get]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get]
{{- end -}}

{{/*
Services with spec.gateway only, in gateway.namespaces only: the operator applies the route,
the InferencePool and the endpoint picker's ConfigMap, and gives the picker a Role that reads
its pool's pods, the pool, and the InferenceObjectives and InferenceModelRewrites it watches
where their CRDs exist, which Kubernetes lets it create only with rights it holds itself (get
and watch on pods, list and watch on InferencePools, and the last two's get, list and watch
are held for that alone).
*/}}
{{- define "kiln.gatewayRules" -}}
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch, delete]
- apiGroups: [inference.networking.k8s.io]
  resources: [inferencepools]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, watch]
- apiGroups: [inference.networking.x-k8s.io]
  resources: [inferenceobjectives, inferencemodelrewrites]
  verbs: [get, list, watch]
{{- if eq .Values.gateway.provider "istio" }}
- apiGroups: [networking.istio.io]
  resources: [destinationrules]
  verbs: [get, create, patch, delete]
{{- end }}
{{- end -}}

{{/* Cluster-scoped: engines are shared across namespaces (and collected when no service
references them); kopf discovers CRDs, and with watchNamespaces lists and watches namespaces
(kopf ScanningSettings: "requires the RBAC permissions to list/watch the V1 namespaces and
CRDs"; refused, it retries for about a minute before it serves any namespace). */}}
{{- define "kiln.clusterRules" -}}
- apiGroups: [serving.kiln.dev]
  resources: [llmengines]
  verbs: [get, list, create, patch, delete]
- apiGroups: [serving.kiln.dev]
  resources: [llmengines/status]
  verbs: [patch]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end -}}
