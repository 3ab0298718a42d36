"""charts/kiln rendered by the real Helm engine (helm-python-sdk), linted, and every object
validated: built-in kinds with kubernetes-validate (strict, 1.33), Prometheus-operator kinds
against their CRD schemas."""

from __future__ import annotations

import json
import re
import tomllib

import helm_python as helm
import pytest
import yaml

from kiln.controller.telemetry import Telemetry

from ..conftest import ROOT
from ..support import crd_schemas
from ..support.kube_versions import validate_on_claimed_minors

CHART = ROOT / "charts" / "kiln"
NAMESPACED = {"watchNamespaces": ["llm", "team-b"]}
EVERYTHING = {**NAMESPACED, "metrics": {"serviceMonitor": {"enabled": True},
                                        "servingPodMonitor": {"enabled": True}},
              "prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}, "replicaCount": 2,
              "gateway": {"namespaces": ["llm"], "modelList": {"gateways": ["gateway-system/public", "llm/internal.v2"]}}}


def render(values=None):
    chart = helm.Chart.load(CHART)
    manifests = chart.render(values or {}, name="kiln", namespace="kiln-system", is_install=True)
    return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_chart_version_follows_the_package_version():
    package = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == package and chart["appVersion"] == package


def test_the_charts_crds_are_the_generated_ones():
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    assert sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml")) == generated, \
        "run `kiln crds -o charts/kiln/files/crds`"
    for name in generated:
        assert (CHART / "files" / "crds" / name).read_text() == (ROOT / "crds" / name).read_text(), \
            f"charts/kiln/files/crds/{name} differs from crds/{name}: run `kiln crds -o charts/kiln/files/crds`"
    rendered = {o["metadata"]["name"]: o for o in of_kind(render(), "CustomResourceDefinition")}
    for name in generated:
        expected = yaml.safe_load((ROOT / "crds" / name).read_text())
        got = rendered[expected["metadata"]["name"]]
        assert got["metadata"]["annotations"].pop("helm.sh/resource-policy") == "keep"
        if not got["metadata"]["annotations"]:
            del got["metadata"]["annotations"]
        assert got == expected


def test_crds_can_be_left_to_another_tool():
    assert of_kind(render({"crds": {"enabled": False}}), "CustomResourceDefinition") == []
    [crd, *_] = of_kind(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


@pytest.mark.parametrize("values", [{}, NAMESPACED, EVERYTHING], ids=["default", "namespaced", "everything"])
def test_every_rendered_object_validates(values):
    objects = render(values)
    assert objects
    for obj in objects:
        if crd_schemas.has_schema(obj):
            crd_schemas.validate(obj)
        else:
            validate_on_claimed_minors(obj)


@pytest.mark.parametrize("values", [{}, EVERYTHING], ids=["default", "everything"])
def test_helm_lint_is_clean(values):
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_cluster_wide_mode_grants_through_one_cluster_role():
    objects = render()
    [role] = of_kind(objects, "ClusterRole")
    assert {r for rule in role["rules"] for r in rule["resources"]} >= {"llmservices", "llmengines", "jobs"}
    assert [r["metadata"]["name"] for r in of_kind(objects, "Role")] == ["kiln-lease"]
    [deployment] = of_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == \
        ["run", "--metrics-port=8081", "--max-concurrent-reconciles=2", "--leader-election-namespace=kiln-system",
         "--leader-election-name=kiln-operator", "--cluster-domain=cluster.local"]


def test_the_operator_may_hold_its_lease_and_no_other():
    """The Lease Role: in the release's namespace, create (which RBAC cannot limit by name),
    and get and patch of the Lease kiln-operator only (controller/lease.py writes by merge
    patch); bound to the operator's ServiceAccount, whose pod name is the holder's identity."""
    objects = render(NAMESPACED)
    [role] = [r for r in of_kind(objects, "Role") if r["metadata"]["name"] == "kiln-lease"]
    assert role["metadata"]["namespace"] == "kiln-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kiln-operator"],
         "verbs": ["get", "patch"]}]
    [binding] = [b for b in of_kind(objects, "RoleBinding") if b["metadata"]["name"] == "kiln-lease"]
    assert binding["roleRef"]["name"] == "kiln-lease"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kiln", "namespace": "kiln-system"}]
    [deployment] = of_kind(objects, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]


def test_namespaced_mode_grants_namespaced_rights_only_in_the_watched_namespaces():
    objects = render(NAMESPACED)
    roles = [r for r in of_kind(objects, "Role") if r["metadata"]["name"] != "kiln-lease"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["llm", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(objects, "RoleBinding")
                  if b["metadata"]["name"] != "kiln-lease") == ["llm", "team-b"]
    [cluster_role] = of_kind(objects, "ClusterRole")
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    # kopf lists and watches namespaces when it serves a list of them (refused, it retries
    # for about a minute before serving any: test_operator_pod.py)
    assert cluster_resources == {"llmengines", "llmengines/status", "customresourcedefinitions", "namespaces"}
    [namespaces] = [rule for rule in cluster_role["rules"] if rule["resources"] == ["namespaces"]]
    assert namespaces["verbs"] == ["list", "watch"]
    [deployment] = of_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["run", "--metrics-port=8081", "--max-concurrent-reconciles=2",
                    "--leader-election-namespace=kiln-system", "--leader-election-name=kiln-operator",
                    "--namespace=llm", "--namespace=team-b",
                    "--cluster-domain=cluster.local"]


def test_the_operator_pod_meets_the_restricted_pod_security_standard():
    [deployment] = of_kind(render(), "Deployment")
    spec = deployment["spec"]
    # The new pod waits for the Lease beside the old one, which stops only once it is Ready.
    assert spec["replicas"] == 1 and spec["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    # kopf's liveness endpoint (kiln run serves it on :8080/healthz)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Ready: the leader, or a standby the API server answers (tests/unit/test_operator_readiness.py)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8080, "metrics": 8081}
    assert container["image"] == "ghcr.io/kiln-serving/kiln-operator:" + \
        yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def test_standby_operators_spread_over_nodes_and_one_stays_through_a_drain():
    """One operator needs no budget (a PodDisruptionBudget of one pod would block every
    drain) and no spreading; with a standby the pods prefer different nodes and a drain
    keeps one of them. An affinity of the values' own replaces the spreading."""
    assert of_kind(render(), "PodDisruptionBudget") == []
    [deployment] = of_kind(render(), "Deployment")
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    objects = render({"replicaCount": 2})
    [deployment] = of_kind(objects, "Deployment")
    # The operator's pods alone: a service's pods carry the Deployment's selector labels when
    # it is named like the release (test_chart_releases.py), never component=operator.
    selector = {**deployment["spec"]["selector"]["matchLabels"], "app.kubernetes.io/component": "operator"}
    assert set(selector.items()) <= set(deployment["spec"]["template"]["metadata"]["labels"].items())
    [term] = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                       "labelSelector": {"matchLabels": selector}}
    [budget] = of_kind(objects, "PodDisruptionBudget")
    assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    assert budget["metadata"]["namespace"] == "kiln-system"
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}}}
    [deployment] = of_kind(render({"replicaCount": 2, "affinity": own}), "Deployment")
    assert deployment["spec"]["template"]["spec"]["affinity"] == own


@pytest.mark.parametrize("values, key", [
    ({"replicaCount": "two"}, "replicaCount"),
    ({"replicaCount": -1}, "replicaCount"),
    ({"replicas": 1}, "replicas"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
    ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"metrics": {"port": 8080}}, "port"),
])
def test_invalid_values_are_rejected_naming_the_key(values, key):
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmError) as error:
        chart.render(values, name="kiln", namespace="kiln-system")
    assert key in str(error.value)


def _series_names(exprs):
    names = set()
    for expr in exprs:
        names |= set(re.findall(r"\b(kiln_[a-z_]+)", expr))
    return names


def _exported_names():
    names = set()
    for family in Telemetry().registry.collect():
        names.add(family.name)
        names |= {family.name + suffix for suffix in ("_total", "_bucket", "_sum", "_count")}
    return names


def test_dashboard_and_alerts_query_series_the_operator_exports():
    objects = render(EVERYTHING)
    [dashboard_map] = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_map["data"]["kiln.json"])
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    titles = " ".join(panel["title"] for panel in dashboard["panels"])
    for topic in ("KV-cache", "Queue", "Replicas", "Time to first token", "Engine builds"):
        assert topic in titles
    [rule] = of_kind(objects, "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"KilnEngineBuildFailed", "KilnServiceStalled", "KilnKVCacheSaturatedAtMaxReplicas",
            "KilnServingMetricsMissing", "KilnAutoscalerCorrectingTheModel"} <= set(alerts)
    used = _series_names(exprs + list(alerts.values()))
    assert used and used <= _exported_names(), used - _exported_names()
    # Triton's series are the ones the autoscaler reads (trtllm-facts §3.7)
    triton = " ".join(exprs)
    assert 'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"' in triton
    assert 'nv_trt_llm_request_metrics{request_type="waiting"' in triton


def _rules(objects):
    """(kind, namespace, rule) of every RBAC rule the chart grants its operator."""
    return [(o["kind"], o["metadata"].get("namespace"), rule) for o in objects
            if o["kind"] in ("ClusterRole", "Role") for rule in o["rules"]]


@pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["default", "namespaced"])
def test_the_default_install_grants_secrets_and_exec_only_as_the_threat_model_says(values):
    """README, "Threat model": Secrets by name only (modelCredentials.secretNames, by default
    hf-token); no pods/exec, no Role or RoleBinding writes and no pod reads but the list and
    watch of the metrics' pod cache, unless multiNode.namespaces names a namespace."""
    rules = _rules(render(values))
    assert rules
    for _kind, _namespace, rule in rules:
        resources = set(rule["resources"])
        assert "pods/exec" not in resources and not resources & {"roles", "rolebindings"}, rule
        if "secrets" in resources:
            assert rule == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hf-token"],
                            "verbs": ["get"]}
        if "pods" in resources:
            assert rule["verbs"] == ["list", "watch"]
        assert "*" not in rule["verbs"] and "*" not in resources


def test_no_listed_secret_names_means_no_secret_access():
    rules = _rules(render({"modelCredentials": {"secretNames": []}}))
    assert not [rule for _, _, rule in rules if "secrets" in rule["resources"]]


def test_exec_is_granted_only_in_the_multi_node_namespaces():
    objects = render({"multiNode": {"namespaces": ["llm"]}})
    exec_rules = [(kind, namespace) for kind, namespace, rule in _rules(objects)
                  if "pods/exec" in rule["resources"] or set(rule["resources"]) & {"roles", "rolebindings"}]
    assert set(exec_rules) == {("Role", "llm")}
    [binding] = [b for b in of_kind(objects, "RoleBinding") if b["metadata"]["namespace"] == "llm"]
    assert binding["roleRef"]["name"] == "kiln-multi-node"


def test_the_platform_teams_settings_reach_the_operator():
    [deployment] = of_kind(render({"modelCredentials": {"publicModels": ["hf://org/open-model"]},
                                   "prometheus": {"allowedUrls": ["http://prometheus.monitoring.svc:9090"]}}),
                           "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--public-model=hf://org/open-model" in args
    assert "--allowed-prometheus-url=http://prometheus.monitoring.svc:9090" in args


def test_the_model_stores_reach_the_operator_as_flags_it_takes():
    from kiln.cli import parser, run_policy

    [deployment] = of_kind(render({"clusterDomain": "corp.example", "modelStorage": {
        "s3": {"endpoint": "http://minio.storage.svc:9000", "region": "eu-central-1"},
        "hubEndpoint": "https://hf-mirror.example.internal"}}), "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    platform = run_policy(parser().parse_args(args)).platform
    assert (platform.s3_endpoint, platform.s3_region, platform.hub_endpoint, platform.cluster_domain) == (
        "http://minio.storage.svc:9000", "eu-central-1", "https://hf-mirror.example.internal", "corp.example")
    [default] = of_kind(render({}), "Deployment")
    assert run_policy(parser().parse_args(
        default["spec"]["template"]["spec"]["containers"][0]["args"])).platform.cluster_domain == "cluster.local"
    [default] = of_kind(render({}), "Deployment")
    assert not [a for a in default["spec"]["template"]["spec"]["containers"][0]["args"]
                if a.startswith(("--s3-", "--hub-"))]


@pytest.mark.parametrize("values, key", [
    ({"modelStorage": {"s3": {"endpoint": "http://minio:9000/?x="}}}, "endpoint"),
    ({"modelStorage": {"s3": {"region": "us east; rm"}}}, "region"),
    ({"modelStorage": {"hubEndpoint": "https://user:pw@mirror"}}, "hubEndpoint"),
    ({"clusterDomain": "Corp Example"}, "clusterDomain"),
    ({"prometheus": {"allowedUrls": ["http://prom:9090/?x="]}}, "allowedUrls"),
    ({"modelCredentials": {"secretNames": ["Not/A/Name"]}}, "secretNames"),
    ({"multiNode": {"namespaces": ["kube_system"]}}, "namespaces"),
])
def test_tenancy_values_are_checked_naming_the_key(values, key):
    with pytest.raises(helm.HelmError) as error:
        helm.Chart.load(CHART).render(values, name="kiln", namespace="kiln-system")
    assert key in str(error.value)


def test_custom_images_on_multi_node_services_are_the_platform_teams_choice():
    def args(values):
        [deployment] = of_kind(render(values), "Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--multi-node-custom-images" not in args({})
    assert "--multi-node-custom-images" in args({"multiNode": {"customImages": True}})


def test_deleting_unreferenced_engine_files_is_the_platform_teams_choice_off_by_default():
    def args(values):
        [deployment] = of_kind(render(values), "Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--delete-unreferenced-engine-files" not in args({})
    assert "--delete-unreferenced-engine-files" not in args({"engineCache": {"deleteUnreferencedFiles": False}})
    assert "--delete-unreferenced-engine-files" in args({"engineCache": {"deleteUnreferencedFiles": True}})
    with pytest.raises(helm.HelmError) as error:
        helm.Chart.load(CHART).render({"engineCache": {"deleteUnreferencedFiles": "yes"}},
                                      name="kiln", namespace="kiln-system")
    assert "deleteUnreferencedFiles" in str(error.value)


def test_the_install_notes_commands_fit_the_example_they_apply():
    """NOTES.txt applies an example by URL: the namespace it watches and describes is the
    example's own (kubectl refuses `-n` for another), and the example is in the repository."""
    chart = helm.Chart.load(CHART)
    notes = chart.render({}, name="kiln", namespace="kiln-system", is_install=True)["kiln/templates/NOTES.txt"]
    [path] = re.findall(r"/v[0-9.]+/(examples/[a-z0-9.-]+\.yaml)", notes)
    example = yaml.safe_load((ROOT / path).read_text())
    namespace, name = example["metadata"]["namespace"], example["metadata"]["name"]
    assert f"kubectl get llms -n {namespace} -w" in notes
    assert f"kubectl describe llms -n {namespace} {name}" in notes
    assert "kiln-engine-cache" in notes and example["spec"]["model"]["credentials"]["secretName"] in notes
    elsewhere = chart.render({"watchNamespaces": ["team-b"]}, name="kiln", namespace="kiln-system",
                             is_install=True)["kiln/templates/NOTES.txt"]
    assert "not one this release manages: change its metadata.namespace" in elsewhere


def test_the_model_list_answers_get_v1_models_on_each_listed_gateway():
    """gateway.modelList (kiln/modellist.py): a server with no token, an HTTPRoute per Gateway
    that names it in a header it sets, and the operator's right to patch the one ConfigMap."""
    from kiln.cli import parser, run_policy
    from kiln.modellist import MODEL_LIST_HEADER

    gateways = ["gateway-system/public", "llm/internal.v2"]
    objects = render({"gateway": {"namespaces": ["llm"], "modelList": {"gateways": gateways}}})
    operator, server = sorted(of_kind(objects, "Deployment"), key=lambda d: d["metadata"]["name"])
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-list-configmap=kiln-system/kiln-model-list" in args
    policy = run_policy(parser().parse_args(args))
    assert (policy.model_list, policy.model_list_gateways) == ("kiln-system/kiln-model-list", tuple(gateways))
    pod = server["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    [container] = pod["containers"]
    assert container["args"][0] == "model-list" and parser().parse_args(container["args"]).port == 8080
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["volumes"] == [{"name": "lists", "configMap": {"name": "kiln-model-list", "optional": True}}]
    # The operator's own pods are not the list server's, nor the other way round.
    assert not set(operator["spec"]["selector"]["matchLabels"].items()) <= set(
        server["spec"]["template"]["metadata"]["labels"].items())
    [service] = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "kiln-model-list"]
    assert service["spec"]["selector"] == server["spec"]["selector"]["matchLabels"]
    routes = of_kind(objects, "HTTPRoute")
    assert len({r["metadata"]["name"] for r in routes}) == 2
    for route, gateway in zip(routes, gateways):
        namespace, name = gateway.split("/")
        assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                                "namespace": namespace, "name": name}]
        [rule] = route["spec"]["rules"]
        assert rule["matches"] == [{"method": "GET", "path": {"type": "Exact", "value": "/v1/models"}}]
        assert rule["filters"] == [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": MODEL_LIST_HEADER, "value": gateway}]}}]
        assert rule["backendRefs"] == [{"kind": "Service", "name": "kiln-model-list", "port": 8080}]
    [role] = [r for r in of_kind(objects, "Role") if r["metadata"]["name"] == "kiln-model-list"]
    assert role["metadata"]["namespace"] == "kiln-system"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kiln-model-list"],
                              "verbs": ["create", "patch"]}]
    # None of it without Gateways listed.
    assert not [o for o in render({"gateway": {"namespaces": ["llm"]}}) if "model-list" in o["metadata"]["name"]]


def test_a_namespaced_install_refuses_services_where_no_release_serves():
    # Enforced on the real API server: tests/integration/test_admission_policy.py.
    kinds = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    assert not [o for o in render({}) if o["kind"] in kinds]  # every namespace is served
    assert not [o for o in render({**NAMESPACED, "admissionPolicy": {"enabled": False}}) if o["kind"] in kinds]
    [policy] = [o for o in render(NAMESPACED) if o["kind"] == kinds[0]]
    [binding] = [o for o in render(NAMESPACED) if o["kind"] == kinds[1]]
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE"]
    assert policy["spec"]["validations"][0]["expression"] == 'request.namespace in ["llm","team-b"]'


def test_the_admission_policy_is_made_by_the_release_that_installs_the_crds_alone():
    # Every bound policy must admit a request: one per release would refuse each other's
    # namespaces. A values file's empty key (null) unsets it, as Helm does with any default.
    kinds = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    assert not [o for o in render({**NAMESPACED, "crds": {"enabled": False}}) if o["kind"] in kinds]
    assert not [o for o in render({**NAMESPACED, "admissionPolicy": None}) if o["kind"] in kinds]
    [policy] = [o for o in render({**NAMESPACED, "admissionPolicy": {"otherReleasesNamespaces": None}})
                if o["kind"] == kinds[0]]
    assert policy["spec"]["validations"][0]["expression"] == 'request.namespace in ["llm","team-b"]'
    notes = helm.Chart.load(CHART).render({**NAMESPACED, "admissionPolicy": {"otherReleasesNamespaces": ["c"]}},
                                          name="kiln", namespace="kiln-system", is_install=True)
    [text] = [t for path, t in notes.items() if path.endswith("NOTES.txt")]
    assert "any other namespace but c (other releases') is refused" in text
    assert "admissionPolicy.otherReleasesNamespaces" in text
