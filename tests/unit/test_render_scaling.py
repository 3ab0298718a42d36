"""keda, hpa and keda-http modes: the rendered ScaledObject, HPA and HTTPScaledObject validate
against their schemas."""

from __future__ import annotations

import pytest

from kiln.api import parse_service_spec
from kiln.render import ServiceRef, openai_endpoint, render

from ..support import cel_rules, crd_schemas
from ..support.kube_versions import validate_on_claimed_minors
from ..support.planning import planned


def _render(mode, **scaling):
    spec = parse_service_spec({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "precision": "fp8",
                               "autoscaling": {"mode": mode, "minReplicas": 1, "maxReplicas": 6, **scaling}})
    result, gpu = planned(spec)
    return render(ServiceRef("llama", "llm", "uid-1"), spec, result, gpu)


def test_keda_scaled_object_validates_and_targets_the_scale_subresource():
    obj = _render("keda").scaler
    assert obj["kind"] == "ScaledObject"
    crd_schemas.validate(obj)
    assert obj["spec"]["scaleTargetRef"] == {"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                                             "name": "llama"}
    trigger = obj["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "0.75"
    assert 'kv_cache_block_type="fraction"' in trigger["metadata"]["query"]
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_hpa_validates_strict():
    obj = _render("hpa", minReplicas=2, targetKVCacheUtilization=0.8).scaler
    validate_on_claimed_minors(obj)
    assert obj["spec"]["minReplicas"] == 2
    assert obj["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "800m"


@pytest.mark.parametrize("mode", ["none", "builtin"])
def test_other_modes_render_no_scaler(mode):
    assert _render(mode).scaler is None


def test_keda_http_routes_the_openai_endpoint_through_the_interceptor():
    rendered = _render("keda-http", minReplicas=0)
    assert rendered.scaler is None  # the add-on makes the ScaledObject; two would fight
    alias, scaled = rendered.wake
    crd_schemas.validate(scaled)
    schema = crd_schemas._schemas()[(scaled["apiVersion"], scaled["kind"])]
    assert cel_rules.violations(schema, scaled) == []
    validate_on_claimed_minors(alias)
    spec = scaled["spec"]
    # The Host a client of status.endpoints.openai sends, port stripped, is a routed host.
    url = openai_endpoint(_spec("keda-http"), "llama", "llm")
    assert url == "http://llama-openai.llm.svc:8080/v1"
    assert url.split("/")[2].split(":")[0] in spec["hosts"]
    assert spec["pathPrefixes"] == ["/v1"]
    assert alias["metadata"]["name"] == "llama-openai"
    assert alias["spec"]["externalName"] == "keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local"
    assert spec["scaleTargetRef"] == {"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                                      "name": "llama", "service": "llama-server", "port": 9000}
    assert spec["replicas"] == {"min": 0, "max": 6}
    # The hold covers the planned cold start (the add-on's default is 1.5 s).
    assert int(spec["timeouts"]["conditionWait"].rstrip("s")) >= 60
    assert scaled["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def _spec(mode):
    return parse_service_spec({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                               "autoscaling": {"mode": mode, "minReplicas": 0, "maxReplicas": 6}})


def _matchers(query):
    """The label matchers of a PromQL selector: {label: (op, value)}."""
    import re

    inside = query[query.index("{") + 1:query.rindex("}")]
    return {m[0]: (m[1], m[2]) for m in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', inside)}


def _selects(matchers, series):
    import re

    for label, (op, value) in matchers.items():
        got = series.get(label, "")
        ok = {"=": got == value, "!=": got != value,
              "=~": re.fullmatch(value, got) is not None, "!~": re.fullmatch(value, got) is None}[op]
        if not ok:
            return False
    return True


@pytest.mark.parametrize("example", ["llama-3.1-8b-fp8.yaml", "llama-3.1-405b-fp8-multinode.yaml"])
def test_the_keda_query_selects_the_series_the_charts_pod_monitor_makes_of_every_serving_pod(example):
    """The series Prometheus holds for a serving pod carry what the chart's PodMonitor gives
    them (namespace, pod, and llmservice from the pod's instance label); a multi-node service's
    pods are its LeaderWorkerSet's, named after the group, not the server."""
    import yaml

    from ..conftest import ROOT
    from ..support.cluster import chart_manifests

    manifest = yaml.safe_load((ROOT / "examples" / example).read_text())
    spec = parse_service_spec({**manifest["spec"], "autoscaling": {
        "mode": "keda", "minReplicas": 1, "maxReplicas": 3,
        "prometheusUrl": "http://prometheus.monitoring.svc:9090"}})
    result, gpu = planned(spec)
    name = manifest["metadata"]["name"]
    rendered = render(ServiceRef(name, "llm", "uid-1"), spec, result, gpu)
    [monitor] = [o for o in chart_manifests({"metrics": {"servingPodMonitor": {"enabled": True}}})
                 if o["kind"] == "PodMonitor"]
    [relabel] = monitor["spec"]["podMetricsEndpoints"][0]["relabelings"]
    source = relabel["sourceLabels"][0].removeprefix("__meta_kubernetes_pod_label_")
    workload = rendered.workload
    if workload["kind"] == "LeaderWorkerSet":  # rank 0, the one exposing metrics, is the leader
        template = workload["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
        pod_name = f"{workload['metadata']['name']}-0"
    else:
        template = workload["spec"]["template"]
        pod_name = f"{workload['metadata']['name']}-5d8f7c9b4-x2k9p"
    pod_labels = {k.replace(".", "_").replace("/", "_").replace("-", "_"): v
                  for k, v in template["metadata"]["labels"].items()}
    series = {"__name__": "nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type": "fraction",
              "model": "tensorrt_llm", "namespace": "llm", "pod": pod_name,
              relabel["targetLabel"]: pod_labels[source]}
    query = rendered.scaler["spec"]["triggers"][0]["metadata"]["query"]
    assert _selects(_matchers(query), series), (query, series)
    # and not another service's pod, whose name merely starts like this one's
    other = {**series, "pod": f"{name}-server-x-0", relabel["targetLabel"]: f"{name}-server-x"}
    assert not _selects(_matchers(query), other), query


def test_keda_http_names_the_interceptor_in_the_clusters_own_domain():
    """An ExternalName is a CNAME, which no search path completes: its target carries the
    cluster's domain, and a client using the fully qualified name sends a Host in it."""
    from kiln.render import Platform

    spec = _spec("keda-http")
    result, gpu = planned(spec)
    rendered = render(ServiceRef("llama", "llm", "uid-1"), spec, result, gpu,
                      platform=Platform(cluster_domain="corp.example"))
    alias, scaled = rendered.wake
    assert alias["spec"]["externalName"] == "keda-add-ons-http-interceptor-proxy.keda.svc.corp.example"
    assert scaled["spec"]["hosts"] == ["llama-openai.llm.svc", "llama-openai.llm.svc.corp.example"]


@pytest.mark.parametrize("changes, admitted", [
    ({"autoscaling": {"mode": "keda-http", "minReplicas": 0, "maxReplicas": 2}}, {"keda"}),
    ({"gateway": {"name": "inference-gateway", "namespace": "gateway"}}, {"gateway"}),
    ({"gateway": {"name": "inference-gateway"}}, set()),  # the service's own namespace
])
def test_a_network_policy_admits_what_the_spec_routes_through(changes, admitted):
    """keda-http's interceptor and a Gateway's proxies call the OpenAI port: a policy that
    admitted neither would drop every request the spec itself sends that way."""
    raw = {"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "precision": "fp8",
           "networkPolicy": {"enabled": True, "allowedNamespaces": ["team-a"]}, **changes}
    spec = parse_service_spec(raw)
    result, gpu = planned(spec)
    policy = render(ServiceRef("llama", "llm", "uid-1"), spec, result, gpu).network_policy
    first = policy["spec"]["ingress"][0]
    names = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
             for peer in first["from"] if "namespaceSelector" in peer}
    assert names == {"team-a"} | admitted
    assert {"protocol": "TCP", "port": "openai"} in first["ports"]
