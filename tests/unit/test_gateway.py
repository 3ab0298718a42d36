"""spec.gateway renders an HTTPRoute on the platform's Gateway, an InferencePool of the
serving pods and its endpoint picker; the objects validate against the stored CRD schemas
(tests/support/schemas: Gateway API v1.6.1, Inference Extension v1.6.0) in test_render's
golden test of examples/llama-3.1-8b-fp8-gateway.yaml."""

from __future__ import annotations

import pytest
import yaml

from kiln.api import parse_service_manifest
from kiln.errors import SpecInvalid
from kiln.render import ServiceRef, render
from kiln.render.platform import DEFAULT_PLATFORM, Platform
from kiln_runtime.triton_repo import STATS_PERIOD_MS

from ..conftest import ROOT
from ..support import crd_schemas
from ..support.planning import planned

EXAMPLE = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8-gateway.yaml").read_text())


def _rendered(manifest, platform=DEFAULT_PLATFORM):
    _, spec = parse_service_manifest(manifest)
    result, gpu = planned(spec)
    return render(ServiceRef(manifest["metadata"]["name"], "llm", "uid-1"), spec, result, gpu,
                  platform=platform)


def _by_kind(rendered):
    return {(o["kind"], o["metadata"]["name"]): o for o in rendered.gateway}


def test_route_pool_and_picker_fit_together():
    rendered = _rendered(EXAMPLE)
    objects = _by_kind(rendered)
    pool = objects[("InferencePool", "llama-8b-gw-pool")]
    route = objects[("HTTPRoute", "llama-8b-gw-openai")]
    epp = objects[("Deployment", "llama-8b-gw-epp")]
    epp_service = objects[("Service", "llama-8b-gw-epp")]
    for obj in (pool, route):
        crd_schemas.validate(obj)
    # The pool is the serving pods, on the port the OpenAI frontend listens on.
    pod = rendered.workload["spec"]["template"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    openai_port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]
                       if p["name"] == "openai")
    assert pool["spec"]["targetPorts"] == [{"number": openai_port}]
    # The picker behind endpointPickerRef is the EPP Service's gRPC port, reading Triton's metrics.
    ref = pool["spec"]["endpointPickerRef"]
    assert ref["name"] == epp_service["metadata"]["name"]
    assert ref["port"]["number"] == epp_service["spec"]["ports"][0]["port"]
    args = epp["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--pool-name") + 1] == pool["metadata"]["name"]
    # v1.5.0 refuses its deprecated metric flags and never starts (pkg/epp/server/options.go,
    # Validate); Triton's series come from the plugins' engine config. The binary itself runs
    # these in tests/integration/test_gateway.py.
    refused = {"--total-queued-requests-metric", "--total-running-requests-metric",
               "--kv-cache-usage-percentage-metric", "--lora-info-metric", "--cache-info-metric"}
    assert not refused & {arg.split("=", 1)[0] for arg in args}
    config_map = objects[("ConfigMap", "llama-8b-gw-epp")]
    plugins = yaml.safe_load(config_map["data"][args[args.index("--config-file") + 1].rsplit("/", 1)[1]])
    [extractor] = [p for p in plugins["plugins"] if p["type"] == "core-metrics-extractor"]
    assert extractor["parameters"] == {"defaultEngine": "triton-tensorrt-llm"}
    assert any(p["type"] == "metrics-data-source" for p in plugins["plugins"])
    assert epp_service["spec"]["selector"].items() <= \
        epp["spec"]["template"]["metadata"]["labels"].items()
    # It reads each pod's page once per update of the engine's gauges (the backend's stats
    # period in the model repository), not at its 50 ms default; and its own metrics are on
    # the Service as the project's chart has them (epp-service.yaml, http-metrics 9090).
    assert args[args.index("--refresh-metrics-interval") + 1] == f"{STATS_PERIOD_MS}ms"
    container_ports = {p["name"]: p["containerPort"]
                       for p in epp["spec"]["template"]["spec"]["containers"][0]["ports"]}
    metrics = next(p for p in epp_service["spec"]["ports"] if p["name"] == "http-metrics")
    assert metrics["port"] == container_ports[metrics["targetPort"]] == 9090
    # The route: the platform's Gateway, this service's model, this pool.
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "inference-gateway", "namespace": "gateway"}]
    rule, retrieve = route["spec"]["rules"]
    assert rule["matches"][0]["headers"] == [
        {"type": "Exact", "name": "X-Gateway-Model-Name", "value": "llama-3.1-8b-instruct"}]
    assert rule["backendRefs"] == [{"group": "inference.networking.k8s.io",
                                    "kind": "InferencePool", "name": pool["metadata"]["name"]}]
    # GET /v1/models/<name> has no body for the router to read: the path names the model,
    # and the Service's OpenAI port answers it.
    service = rendered.service
    assert retrieve["matches"] == [{"method": "GET", "path": {
        "type": "Exact", "value": "/v1/models/llama-3.1-8b-instruct"}}]
    [backend] = retrieve["backendRefs"]
    assert backend["kind"] == "Service" and backend["name"] == service["metadata"]["name"]
    assert backend["port"] in [p["port"] for p in service["spec"]["ports"] if p["name"] == "openai"]
    # The picker's Role is all it reads (the two x-k8s.io kinds it watches where their CRDs
    # exist; without the right it never becomes ready); the operator owns every object.
    role = objects[("Role", "llama-8b-gw-epp")]
    assert {r for rule in role["rules"] for r in rule["resources"]} == {
        "pods", "inferencepools", "inferenceobjectives", "inferencemodelrewrites"}
    assert all(rule["verbs"] == ["get", "list", "watch"] for rule in role["rules"])
    # The picker is the Inference Extension's last release that publishes one (v1.6 ships
    # only its conformance picker, lwepp, whose flags are not these).
    assert epp["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "uid-1" for o in rendered.gateway)


def test_an_istio_gateway_reaches_the_picker_over_tls():
    """Istio's proxies dial a Service in plaintext unless a DestinationRule says otherwise, and
    the picker serves TLS with a self-signed certificate: with gateway.provider istio a
    DestinationRule for the picker's Service says SIMPLE TLS without verification, as the
    Inference Extension's chart writes for Istio (config/charts/inferencepool/templates/istio.yaml)."""
    assert not [o for o in _rendered(EXAMPLE).gateway if o["kind"] == "DestinationRule"]
    rendered = _rendered(EXAMPLE, Platform(gateway_provider="istio", cluster_domain="corp.internal"))
    objects = _by_kind(rendered)
    rule = objects[("DestinationRule", "llama-8b-gw-epp")]
    crd_schemas.validate(rule)  # Istio's own CRD (istio/api v1.32.0)
    service = objects[("Service", "llama-8b-gw-epp")]
    assert rule["spec"] == {"host": "llama-8b-gw-epp.llm.svc.corp.internal",
                            "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}}
    assert rule["spec"]["host"].startswith(f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.")
    assert rule["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    # Written before the pool that points the Gateway at the picker.
    kinds = [o["kind"] for o in rendered.gateway]
    assert kinds.index("DestinationRule") < kinds.index("InferencePool")


def test_the_chart_lets_the_operator_write_destination_rules_only_for_istio():
    from ..support.cluster import chart_manifests

    def gateway_role(values):
        [role] = [o for o in chart_manifests(values) if o["kind"] == "Role"
                  and o["metadata"]["name"].endswith("-gateway")]
        return [rule for rule in role["rules"] if "networking.istio.io" in rule["apiGroups"]]

    def args(values):
        [deployment] = [o for o in chart_manifests(values) if o["kind"] == "Deployment"]
        return deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    assert gateway_role({"gateway": {"namespaces": ["llm"]}}) == []
    assert not any(a.startswith("--gateway-provider") for a in args({"gateway": {"namespaces": ["llm"]}}))
    istio = {"gateway": {"namespaces": ["llm"], "provider": "istio"}}
    assert gateway_role(istio) == [{"apiGroups": ["networking.istio.io"], "resources": ["destinationrules"],
                                    "verbs": ["get", "create", "patch", "delete"]}]
    assert "--gateway-provider=istio" in args(istio)


def test_without_gateway_nothing_is_rendered():
    manifest = yaml.safe_load(yaml.safe_dump(EXAMPLE))
    del manifest["spec"]["gateway"]
    assert _rendered(manifest).gateway == ()


@pytest.mark.parametrize("change, field", [
    ({"runtime": {"server": "djl"}}, "spec.gateway"),
    ({"gateway": {"name": "Bad_Name"}}, "spec.gateway.name"),
    ({"gateway": {"name": "gw", "namespace": "../x"}}, "spec.gateway.namespace"),
    ({"gateway": {"name": "gw", "port": 80}}, "spec.gateway.port"),
])
def test_bad_gateway_specs_name_the_field(change, field):
    manifest = yaml.safe_load(yaml.safe_dump(EXAMPLE))
    manifest["spec"].update(change)
    with pytest.raises(SpecInvalid, match=field.replace(".", r"\.")):
        parse_service_manifest(manifest)
