"""Where builds reach the model stores: the platform team's S3-compatible endpoint, region and
Hub mirror (the chart's modelStorage, ``kiln run --s3-endpoint/--s3-region/--hub-endpoint``),
never a tenant's. Each reaches a build Job only for the kind of store its sources are in."""

from __future__ import annotations

import pytest

from kiln.api import parse_service_spec
from kiln.render import ServiceRef, Platform, render

from ..support.planning import catalog_model, planned

STORES = Platform(s3_endpoint="http://minio.storage.svc:9000", s3_region="us-east-1",
                          hub_endpoint="https://hf-mirror.internal")


def _env(model, platform=STORES, precision="fp8"):
    spec = parse_service_spec({"model": model, "precision": precision, "gpu": {"type": "H100-80GB"}})
    result, gpu = planned(spec, catalog_model("hf://Qwen/Qwen2.5-7B-Instruct"))
    job = render(ServiceRef("svc", "llm", None), spec, result, gpu, platform=platform).build_job
    return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("model, expected", [
    ({"source": "hf://Qwen/Qwen2.5-7B-Instruct"}, {"HF_ENDPOINT": "https://hf-mirror.internal"}),
    # fp8 calibrates: on cnn_dailymail from the Hub (or its mirror) without a set of its own
    ({"source": "s3://models/qwen-7b"}, {"AWS_ENDPOINT_URL": "http://minio.storage.svc:9000",
                                          "AWS_DEFAULT_REGION": "us-east-1",
                                          "HF_ENDPOINT": "https://hf-mirror.internal"}),
    ({"source": "pvc://models/qwen-7b"}, {"HF_ENDPOINT": "https://hf-mirror.internal"}),
    ({"source": "pvc://models/qwen-7b", "calibration": {"source": "pvc://sets/chats"}}, {}),
    ({"source": "hf://Qwen/Qwen2.5-7B-Instruct", "calibration": {"source": "s3://calibration/chats"}},
     {"HF_ENDPOINT": "https://hf-mirror.internal", "AWS_ENDPOINT_URL": "http://minio.storage.svc:9000",
      "AWS_DEFAULT_REGION": "us-east-1"}),
])
def test_a_build_reaches_the_stores_its_sources_are_in(model, expected):
    env = _env(model)
    assert {k: v for k, v in env.items() if k in ("HF_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")} == expected


def test_a_build_that_reads_no_hub_gets_no_mirror():
    assert "HF_ENDPOINT" not in _env({"source": "pvc://models/qwen-7b"}, precision="bf16")


def test_without_the_setting_a_build_reaches_aws_and_the_hub_and_the_key_is_the_same():
    assert not {"HF_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"} & set(_env(
        {"source": "s3://models/qwen-7b"}, Platform()))
    # The same bytes from a mirror: the engine is the one built from the Hub.
    spec = parse_service_spec({"model": {"source": "hf://Qwen/Qwen2.5-7B-Instruct"}, "precision": "fp8"})
    result, gpu = planned(spec)
    keys = {render(ServiceRef("svc", "llm", None), spec, result, gpu, platform=platform).engine["spec"]["key"]
            for platform in (STORES, Platform())}
    assert len(keys) == 1


def test_a_bucket_is_never_read_with_the_nodes_instance_role():
    """Without spec.model.credentials, boto3 would fall back to the node's instance role for a
    bucket the tenant chose."""
    for model in ({"source": "s3://models/qwen-7b"},
                  {"source": "hf://Qwen/Qwen2.5-7B-Instruct", "calibration": {"source": "s3://calibration/chats"}}):
        for platform in (STORES, Platform()):
            assert _env(model, platform)["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_EC2_METADATA_DISABLED" not in _env({"source": "hf://Qwen/Qwen2.5-7B-Instruct"})
