"""charts/kiln as platform teams install it: under release names of their own, more than once
on a cluster, beside the LLMServices the operator serves, and upgraded in place. The release's
objects must not select what the operator creates, nor another release's; every name the chart
makes must be one the API server takes; and values that would render objects the API server
refuses, or rights the operator does not use, are refused at install naming the key."""

from __future__ import annotations

import json
import re

import helm_python as helm
import pytest

from kiln.cli import parser
from kiln.render.meta import labels

from ..conftest import ROOT
from .test_chart import CHART, EVERYTHING, of_kind

# Every component the operator labels an object of an LLMService with (kiln/render).
CHILD_COMPONENTS = ["server", "engine", "engine-build", "epp", "autoscaler", "launcher"]
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def render(values=None, name="kiln", namespace="kiln-system"):
    import yaml
    manifests = helm.Chart.load(CHART).render(values or {}, name=name, namespace=namespace, is_install=True)
    return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def refusal(values, name="kiln", namespace="kiln-system") -> str:
    with pytest.raises(helm.HelmError) as error:
        helm.Chart.load(CHART).render(values, name=name, namespace=namespace, is_install=True)
    return str(error.value)


def _selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return set(selector.items()) <= set(pod_labels.items())


def test_a_service_named_like_the_release_is_not_taken_for_the_operator():
    """An LLMService named like the release, in the release's namespace, gets the operator's
    labels name=kiln and instance=<its name> on its pods and Services: the operator's metrics
    Service, its PodDisruptionBudget, its spreading and its ServiceMonitor select the operator's
    own pods and Service only (else the serving pods' metrics port joins the operator's, masking
    KilnOperatorDown, and a serving pod under two budgets cannot be evicted)."""
    objects = render({**EVERYTHING, "watchNamespaces": ["kiln-system"], "gateway": {}})
    [deployment] = of_kind(objects, "Deployment")
    own = deployment["spec"]["template"]["metadata"]["labels"]
    [service] = [s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "kiln-metrics"]
    [budget] = of_kind(objects, "PodDisruptionBudget")
    [term] = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    [monitor] = of_kind(objects, "ServiceMonitor")
    pod_selectors = {"the metrics Service": service["spec"]["selector"],
                     "the PodDisruptionBudget": budget["spec"]["selector"]["matchLabels"],
                     "the spreading": term["podAffinityTerm"]["labelSelector"]["matchLabels"]}
    for what, selector in pod_selectors.items():
        assert _selects(selector, own), f"{what} does not select the operator's pods"
        for component in CHILD_COMPONENTS:
            assert not _selects(selector, labels("kiln", component)), \
                f"{what} selects the {component} pods of an LLMService named kiln"
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert not _selects(monitor["spec"]["selector"]["matchLabels"], labels("kiln", "server"))
    # The Deployment's own selector is immutable: it stays as installed, and the pods of an
    # LLMService are each owned by their own ReplicaSet, which it does not adopt.
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "kiln", "app.kubernetes.io/instance": "kiln"}


def test_the_documented_upgrade_keeps_the_new_charts_defaults():
    """`helm upgrade --reuse-values` replaces the new chart's defaults with the values of the
    release it upgrades (helm/helm pkg/action/upgrade.go: ``chart.Values = oldVals``), so a
    key a later chart added is missing and its templates fail; --reset-then-reuse-values
    (Helm 3.14, pkg/cmd/upgrade.go) starts from the new defaults and applies the release's
    values over them."""
    install = (ROOT / "docs" / "operations" / "install.md").read_text()
    upgrades = [line for line in install.splitlines() if "helm upgrade" in line]
    assert upgrades
    for line in upgrades:
        assert "--reuse-values" not in line, line
    assert any("--reset-then-reuse-values" in line for line in upgrades)


def _cluster_scoped(objects):
    return {(o["kind"], o["metadata"]["name"]) for o in objects
            if o["kind"] in ("ClusterRole", "ClusterRoleBinding")}


def test_release_and_namespace_names_that_join_alike_name_their_cluster_objects_apart():
    """kiln in team-a and kiln-team in a: joined with '-' both were kiln-team-a."""
    first = render({"watchNamespaces": ["x"]}, name="kiln", namespace="team-a")
    second = render({"watchNamespaces": ["y"], "crds": {"enabled": False}}, name="kiln-team", namespace="a")
    assert not _cluster_scoped(first) & _cluster_scoped(second)


def test_one_release_name_in_two_namespaces_names_its_cluster_objects_apart():
    first = render({"watchNamespaces": ["team-a"]}, namespace="kiln-a")
    second = render({"watchNamespaces": ["team-b"], "crds": {"enabled": False}}, namespace="kiln-b")
    assert _cluster_scoped(first) and not _cluster_scoped(first) & _cluster_scoped(second)
    for objects in (first, second):
        [role] = of_kind(objects, "ClusterRole")
        [binding] = of_kind(objects, "ClusterRoleBinding")
        assert binding["roleRef"]["name"] == role["metadata"]["name"]


def _lease(objects) -> tuple[str, str]:
    """The Lease the operator takes (its own flags, parsed by kiln's parser) and the one its
    Role lets it get and patch."""
    [deployment] = [d for d in of_kind(objects, "Deployment") if "model-list" not in d["metadata"]["name"]]
    args = parser().parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    [role] = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-lease")]
    [named] = [rule for rule in role["rules"] if "resourceNames" in rule]
    [allowed] = named["resourceNames"]
    return args.leader_election_name, allowed


def test_two_releases_in_one_namespace_each_elect_their_own_leader():
    a = render({"watchNamespaces": ["team-a"]}, name="kiln-a")
    b = render({"watchNamespaces": ["team-b"], "crds": {"enabled": False}}, name="kiln-b")
    keys = [{(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects} for objects in (a, b)]
    assert not keys[0] & keys[1]
    lease_a, lease_b = _lease(a), _lease(b)
    assert lease_a[0] == lease_a[1] and lease_b[0] == lease_b[1] and lease_a[0] != lease_b[0]
    # The release named like the chart keeps the Lease it always had, so that an upgrade's
    # new pod waits for the old one instead of acting beside it.
    assert _lease(render()) == ("kiln-operator", "kiln-operator")


@pytest.mark.parametrize("release", ["a" * 53, "kiln-" + "x" * 48, "team-b-llm-serving-production-kiln-operator-001"])
def test_every_name_the_chart_makes_is_one_kubernetes_takes(release):
    """Helm takes release names up to 53 characters; the chart's names add suffixes to them."""
    for obj in render(EVERYTHING, name=release):
        name = obj["metadata"]["name"]
        if obj["kind"] == "Service":
            assert DNS_1035.match(name), f"Service {name!r} is not a DNS-1035 label"
        elif obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):  # a path segment (ValidateRBACName)
            assert name not in (".", "..") and "/" not in name and "%" not in name and len(name) <= 253, name
        else:
            assert len(name) <= (63 if obj["kind"] == "Deployment" else 253) and \
                DNS_1123_SUBDOMAIN.match(name), f"{obj['kind']} {name!r}"
        for key, value in (obj["metadata"].get("labels") or {}).items():
            assert len(value) <= 63, f"{obj['kind']} {name}: label {key}={value!r}"


@pytest.mark.parametrize("release", ["1kiln", "kiln.prod"])
def test_a_release_name_no_service_can_be_named_after_is_refused_saying_so(release):
    """Helm takes these; a Service name must start with a letter and has no dots (DNS-1035),
    and the API server would refuse the operator's metrics Service half-way through the install."""
    message = refusal({}, name=release)
    assert release in message and "DNS-1035" in message


@pytest.mark.parametrize("values, key", [
    ({"priorityClassName": "Not_A_Class"}, "priorityClassName"),
    ({"serviceAccount": {"create": True, "name": "Bad_Name"}}, "name"),
    ({"tolerations": [{"key": "k", "operator": "Sometimes"}]}, "operator"),
    ({"tolerations": [{"key": "k", "effect": "Never"}]}, "effect"),
    ({"tolerations": [{"key": "bad key!", "operator": "Exists"}]}, "key"),
    ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}, "value"),
    ({"tolerations": [{"operator": "Equal", "value": "v"}]}, "key"),
    ({"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]}, "effect"),
    ({"gateway": {"modelList": {"gateways": ["a" * 64 + "/gw"]}}}, "gateways"),
    ({"gateway": {"modelList": {"gateways": ["gw/" + "b" * 254]}}}, "gateways"),
    ({"podLabels": {"app.kubernetes.io/name": "other"}}, "podLabels"),
    ({"podLabels": {"kiln.dev/operator": "false"}}, "podLabels"),
    ({"metrics": {"serviceMonitor": {"labels": {"app.kubernetes.io/instance": "x"}}}}, "labels"),
    ({"dashboard": {"labels": {"app.kubernetes.io/managed-by": "me"}}}, "labels"),
])
def test_values_that_render_objects_the_api_server_refuses_are_refused_naming_the_key(values, key):
    assert key in refusal(values)


def test_a_numeric_priority_class_name_renders_as_a_name():
    [deployment] = of_kind(render({"priorityClassName": "1000"}), "Deployment")
    assert deployment["spec"]["template"]["spec"]["priorityClassName"] == "1000"


@pytest.mark.parametrize("values, key", [
    ({"watchNamespaces": ["llm"], "multiNode": {"namespaces": ["kube-system"]}}, "multiNode.namespaces"),
    ({"watchNamespaces": ["llm"], "gateway": {"namespaces": ["llm", "other"]}}, "gateway.namespaces"),
])
def test_rights_in_namespaces_the_operator_does_not_serve_are_refused(values, key):
    """exec and Role writes (multiNode), ConfigMap and route writes (gateway) in a namespace
    outside watchNamespaces would be rights no service of the release can use."""
    message = refusal(values)
    assert key in message and "watchNamespaces" in message
    # Within them, or with every namespace served, they render.
    assert render({"watchNamespaces": ["llm"], "multiNode": {"namespaces": ["llm"]}, "gateway": {"namespaces": ["llm"]}})
    assert render({"multiNode": {"namespaces": ["kube-system"]}})


def test_the_images_can_be_pinned_by_digest():
    digest = "sha256:" + "ab" * 32
    objects = render({"image": {"repository": "registry.internal:5000/kiln-operator", "digest": digest},
                      "gateway": {"modelList": {"gateways": ["gw/public"]}}, "priorityClassName": "system-cluster-critical"})
    deployments = of_kind(objects, "Deployment")
    assert len(deployments) == 2
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == f"registry.internal:5000/kiln-operator@{digest}"
        assert pod["priorityClassName"] == "system-cluster-critical"


@pytest.mark.parametrize("values, key", [
    ({"image": {"repository": "registry.internal:5000/kiln:1.0"}}, "repository"),
    ({"image": {"repository": "ghcr.io/kiln-serving/kiln-operator", "tag": "sha256:abcd"}}, "tag"),
    ({"image": {"repository": "ghcr.io/kiln-serving/kiln-operator", "digest": "abcd"}}, "digest"),
    ({"metrics": {"serviceMonitor": {"interval": "0"}}}, "interval"),
])
def test_image_references_and_durations_are_checked_naming_the_key(values, key):
    assert key in refusal(values)


@pytest.mark.parametrize("values", [
    {"resources": {"limits": {"memory": "1Pi", "cpu": "1.5"}, "requests": {"memory": "1e9", "cpu": "250m"}}},
    {"metrics": {"serviceMonitor": {"enabled": True, "interval": "1m30s"}}},
])
def test_what_kubernetes_and_prometheus_take_the_chart_takes(values):
    assert render(values)


def test_the_public_models_the_chart_takes_are_the_sources_the_operator_takes():
    """The chart passes each as --public-model, which the operator checks at start: a value
    the schema let through would stop the operator in a crash loop instead of the install."""
    from kiln.api.llmservice import MODEL_SOURCE_PATTERN
    schema = json.loads((CHART / "values.schema.json").read_text())
    items = schema["properties"]["modelCredentials"]["properties"]["publicModels"]["items"]
    assert items["pattern"] == MODEL_SOURCE_PATTERN
    assert "publicModels" in refusal({"modelCredentials": {"publicModels": ["hf://a/b/c"]}})
