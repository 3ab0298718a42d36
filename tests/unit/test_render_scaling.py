"""keda and hpa modes: the rendered ScaledObject and HPA validate against their schemas."""

from __future__ import annotations

import kubernetes_validate
import pytest

from kiln.api import parse_service_spec
from kiln.planner import ModelConfig, catalog_config, lookup_gpu, plan
from kiln.render import ServiceRef, render

from ..support import crd_schemas


def _render(mode, **scaling):
    spec = parse_service_spec({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "precision": "fp8",
                               "autoscaling": {"mode": mode, "minReplicas": 1, "maxReplicas": 6, **scaling}})
    gpu = lookup_gpu(spec.gpu.type, None)
    result = plan(ModelConfig.from_hf(catalog_config("meta-llama/Llama-3.1-8B-Instruct")), spec, gpu)
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
    kubernetes_validate.validate(obj, "1.33", strict=True)
    assert obj["spec"]["minReplicas"] == 2
    assert obj["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "800m"


@pytest.mark.parametrize("mode", ["none", "builtin"])
def test_other_modes_render_no_scaler(mode):
    assert _render(mode).scaler is None
