from __future__ import annotations

import json
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from kiln.api import parse_service_spec
from kiln.render import ServiceRef, engine_for, render

from ..conftest import EXAMPLES, ROOT
from ..support import crd_schemas
from ..support.kube_versions import validate_on_claimed_minors
from ..support.planning import planned

GOLDEN = ROOT / "tests" / "golden"


def _kiln(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiln.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_render_example_is_valid_and_golden(path, request):
    result = _kiln("render", "-f", str(path), "-o", "json")
    assert result.returncode == 0, result.stderr
    objects = json.loads(result.stdout)["items"]
    for obj in objects:
        if crd_schemas.has_schema(obj):
            crd_schemas.validate(obj)
        elif obj["kind"] != "LLMEngine":
            validate_on_claimed_minors(obj)
        assert len(obj["metadata"]["name"]) <= 63
    golden = GOLDEN / f"{path.stem}.yaml"
    text = yaml.safe_dump_all(objects, sort_keys=True)
    if request.config.getoption("--update-golden"):
        golden.write_text(text)
    assert golden.read_text() == text, "render changed: rerun with --update-golden and review"


@pytest.mark.parametrize("manifest, fragment", [
    ("spec: {model: {source: hf://a/b}, precision: fp9}", "spec.precision"),
    ("spec: {model: {source: hf://a/b}, gpus: 8, parallelism: {tensor: 3, pipeline: 1}}", "spec.parallelism"),
    ("spec: {model: {source: hf://a/b}, extra: 1}", "spec.extra: unknown field"),
    ("spec: {model: {source: hf://a/b}, gpus: -2}", "spec.gpus"),
    ("spec: {precision: fp8}", "spec.model: required"),
])
def test_render_rejects_bad_manifests(tmp_path, manifest, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: serving.kiln.dev/v1alpha1\nkind: LLMService\n"
                    "metadata: {name: bad}\n" + manifest + "\n")
    result = _kiln("render", "-f", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _engine(**changes):
    spec = {"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "precision": "fp8", **changes}
    parsed = parse_service_spec(spec)
    result, gpu = planned(parsed)
    return engine_for(parsed, result, gpu, "llm").key


@pytest.mark.parametrize("change, rebuilds", [
    ({"replicas": 3}, False),
    ({"engine": {"kvCacheFreeGpuMemFraction": 0.8}}, False),
    ({"autoscaling": {"mode": "builtin", "maxReplicas": 4}}, False),
    ({"precision": "bf16"}, True),
    ({"kvCacheDtype": "bf16"}, True),
    ({"engine": {"maxSeqLen": 16384}}, True),
    ({"gpus": 2}, True),
    ({"gpu": {"type": "L40S"}}, True),
    ({"runtime": {"server": "djl"}}, True),
])
def test_engine_key_changes_iff_engine_bytes_change(change, rebuilds):
    assert (_engine(**change) != _engine()) is rebuilds


def test_render_is_deterministic_and_owned():
    spec = parse_service_spec({"model": {"source": "hf://mistralai/Mistral-7B-Instruct-v0.3"}})
    result, gpu = planned(spec)
    a = render(ServiceRef("m", "llm", "uid-1"), spec, result, gpu).objects()
    b = render(ServiceRef("m", "llm", "uid-1"), spec, result, gpu).objects()
    assert a == b
    for obj in a[1:]:
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kiln"


def _rendered(**changes):
    source = changes.pop("source", "hf://meta-llama/Llama-3.1-8B-Instruct")
    spec = parse_service_spec({"model": {"source": source}, **changes})
    result, gpu = planned(spec)
    return render(ServiceRef("svc", "llm", "uid-1"), spec, result, gpu)


def test_no_network_policy_unless_enabled():
    assert _rendered().network_policy is None


def test_network_policy_admits_the_namespace_the_named_clients_and_the_operator():
    policy = _rendered(networkPolicy={"enabled": True, "allowedNamespaces": ["gateway", "gateway"],
                                      "metricsNamespaces": ["monitoring"]}).network_policy
    validate_on_claimed_minors(policy)
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/instance": "svc",
                                                   "app.kubernetes.io/managed-by": "kiln"}}
    assert spec["policyTypes"] == ["Ingress"]  # egress stays open
    inference, metrics = spec["ingress"]
    assert inference["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}]
    assert [p["port"] for p in inference["ports"]] == ["http", "grpc", "openai"]
    assert metrics["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"kiln.dev/operator": "true"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert [p["port"] for p in metrics["ports"]] == ["metrics"]
    # The ports it names are the serving container's.
    container = _rendered().workload["spec"]["template"]["spec"]["containers"][0]
    assert {"http", "grpc", "metrics", "openai"} <= {p["name"] for p in container["ports"]}


def test_network_policy_lets_a_multi_node_replicas_ranks_reach_each_other():
    rendered = _rendered(source="hf://meta-llama/Llama-3.1-405B-Instruct", precision="fp8", gpus=16,
                         networkPolicy={"enabled": True})
    *_, ranks = rendered.network_policy["spec"]["ingress"]
    assert ranks == {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "svc"}}}]}


def test_the_operator_pod_carries_the_label_the_network_policy_admits():
    deployment = next(d for d in yaml.safe_load_all(
        _kiln_chart_deployment()) if d and d.get("kind") == "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"]["kiln.dev/operator"] == "true"


def test_a_service_named_like_the_release_restricts_its_own_pods_not_the_operators():
    """A service in the operator's namespace named like the release: its pods carry the
    chart's selector labels (app.kubernetes.io/name=kiln, instance=kiln), and its policy
    selects them by the label only Kiln's children carry as well, so the operator's pods
    and the model-list server's keep the ingress they had."""
    import helm_python as helm

    spec = parse_service_spec({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                               "networkPolicy": {"enabled": True}})
    result, gpu = planned(spec)
    rendered = render(ServiceRef("kiln", "kiln-system", "uid-1"), spec, result, gpu)
    selector = set(rendered.network_policy["spec"]["podSelector"]["matchLabels"].items())
    assert selector <= set(rendered.workload["spec"]["template"]["metadata"]["labels"].items())
    manifests = helm.Chart.load(ROOT / "charts" / "kiln").render(
        {"gateway": {"modelList": {"gateways": ["gw/public"]}}}, name="kiln", namespace="kiln-system")
    chart_pods = [d["spec"]["template"]["metadata"]["labels"] for path, text in manifests.items()
                  if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d and d.get("kind") == "Deployment"]
    assert len(chart_pods) == 2
    for labels in chart_pods:
        assert not selector <= set(labels.items()), labels


def _kiln_chart_deployment() -> str:
    import helm_python as helm
    manifests = helm.Chart.load(ROOT / "charts" / "kiln").render({}, name="kiln", namespace="kiln-system")
    return manifests[next(path for path in manifests if path.endswith("deployment.yaml"))]


def test_the_chart_claims_no_minor_whose_schema_refuses_the_serving_pods():
    from ..support.kube_versions import claimed_minors

    result = _kiln("render", "-f", str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml"), "-o", "json")
    deployment = next(o for o in json.loads(result.stdout)["items"] if o["kind"] == "Deployment")
    assert "sleep" in deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
    # 1.28 has no sleep action at all: a claim reaching it would be a lie the tests catch.
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.28", strict=True)
    assert claimed_minors()[0] == "1.30" and int(claimed_minors()[-1].split(".")[1]) >= 33


def test_a_drain_takes_one_replica_at_a_time_and_never_holds_a_single_one():
    """A node drain or the cluster autoscaler evicts at most one serving pod at a time (a
    drain of a node holding several replicas would take them all, each minutes from serving
    again); a pod that is not Ready goes whatever the budget. Multi-node groups, and services
    that never have a second replica, have none."""
    from kiln.render.serving import multi_node

    from ..support.kube_versions import validate_on_claimed_minors
    from ..support.planning import planned

    seen = []
    for path in EXAMPLES:
        manifest = yaml.safe_load(path.read_text())
        spec = parse_service_spec(manifest["spec"])
        result, gpu = planned(spec)
        rendered = render(ServiceRef(manifest["metadata"]["name"], "llm", "uid-1"), spec, result, gpu)
        budget = rendered.disruption_budget
        scaling = spec.autoscaling
        most = spec.replicas if scaling.mode == "none" else max(spec.replicas, scaling.max_replicas)
        if multi_node(spec) or most < 2:  # a group, or one replica for good: nothing to keep
            assert budget is None, path.name
            continue
        seen.append(path.name)
        validate_on_claimed_minors(budget)
        assert budget["spec"] == {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                                  "selector": {"matchLabels": rendered.service["spec"]["selector"]}}
        pod_labels = rendered.workload["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert budget["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert seen == ["llama-3.1-8b-fp8-scale-from-zero.yaml"]


@pytest.mark.parametrize("name, served", [("ensemble", None), ("svc", "tensorrt_llm"), ("preprocessing", None)])
def test_a_served_model_name_that_is_one_of_tritons_models_is_refused_naming_the_field(name, served):
    """It names a directory of the model repository beside Triton's own models, which it would
    replace (kiln_runtime.triton_repo.TRITON_MODELS): the service stalls saying what to set."""
    from kiln.errors import SpecInvalid
    from kiln_runtime.triton_repo import TRITON_MODELS

    spec = parse_service_spec({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                               **({"servedModelName": served} if served else {})})
    result, gpu = planned(spec)
    with pytest.raises(SpecInvalid, match=r"spec\.servedModelName") as refused:
        render(ServiceRef(name, "llm", "uid-1"), spec, result, gpu)
    assert (served or name) in TRITON_MODELS and (served or name) in refused.value.message
