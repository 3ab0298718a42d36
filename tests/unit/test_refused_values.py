"""Names and values a real API server refuses in the objects Kiln would render: the CRD (its
schema and CEL rules, evaluated as the API server does) and ``kiln render`` both refuse each
up front, naming the field, and what they accept renders objects that validate."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import kubernetes_validate
import pytest
import yaml

from kiln.api.crd import crds
from kiln.cli import main as kiln_main
from kiln_runtime.spec import parse_build_spec

from ..conftest import ROOT
from ..support import cel_rules, crd_schemas

BASE = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
SCHEMA = crds()[1]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
MULTI_NODE = {"spec.gpus": 64, "spec.gpu.perNode": 8, "spec.parallelism": {"tensor": 8, "pipeline": 8}}


def _manifest(changes):
    manifest = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = manifest
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return manifest


def _render(tmp_path, manifest):
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kiln_main(["render", "-f", str(path), "-o", "json"])
    return code, out.getvalue(), err.getvalue()


def _crd_refuses(manifest):
    return cel_rules.refusal(SCHEMA, manifest) is not None


REFUSED = {
    # A Service's name is a DNS-1035 label: the service's name is its stem.
    "name starting with a digit": ({"metadata.name": "8b"}, "metadata.name"),
    "dotted name": ({"metadata.name": "llama.v3"}, "metadata.name"),
    "name over 63 characters": ({"metadata.name": "a" * 64}, "metadata.name"),
    "gpu.type over 63 characters": ({"spec.gpu.type": "g" * 64, "spec.gpu.memoryGiB": 80,
                                     "spec.gpu.arch": "sm90"}, "spec.gpu.type"),
    "kvCacheFreeGpuMemFraction 1e-300": ({"spec.engine.kvCacheFreeGpuMemFraction": 1e-300},
                                         "spec.engine.kvCacheFreeGpuMemFraction"),
    # Written as JSON integers, which the API server checks against int64(0.01) == 0 unless a
    # CEL rule repeats the bound (kiln.api.crd._fractional_bound_rules).
    "kvCacheFreeGpuMemFraction integer 0": ({"spec.engine.kvCacheFreeGpuMemFraction": 0},
                                            "spec.engine.kvCacheFreeGpuMemFraction"),
    "targetKVCacheUtilization integer 0": ({"spec.autoscaling": {"mode": "hpa", "maxReplicas": 2,
                                                                 "targetKVCacheUtilization": 0}},
                                           "spec.autoscaling.targetKVCacheUtilization"),
    "hpa window over 3600 s": ({"spec.autoscaling": {"mode": "hpa", "maxReplicas": 2,
                                                     "scaleDownStabilizationSeconds": 3601}},
                               "spec.autoscaling.scaleDownStabilizationSeconds"),
    "keda window over 3600 s": ({"spec.autoscaling": {"mode": "keda", "maxReplicas": 2,
                                                      "scaleDownStabilizationSeconds": 86400}},
                                "spec.autoscaling.scaleDownStabilizationSeconds"),
    "averageValue 0m": ({"spec.autoscaling": {"mode": "hpa", "maxReplicas": 2,
                                              "targetKVCacheUtilization": 0.0004}},
                        "spec.autoscaling.targetKVCacheUtilization"),
    "launcher Role over the size limit": ({**MULTI_NODE, "spec.replicas": 1000,
                                           "spec.model.source": "hf://meta-llama/Llama-3.1-405B-Instruct",
                                           "spec.precision": "fp8"}, "spec.replicas"),
    "launcher Role over the size limit by maxReplicas": (
        {**MULTI_NODE, "spec.autoscaling": {"mode": "builtin", "maxReplicas": 1000},
        },
        "spec.autoscaling.maxReplicas"),
    "resourceName in kubernetes.io/": ({"spec.gpu.resourceName": "kubernetes.io/gpu"},
                                       "spec.gpu.resourceName"),
    "resourceName in a kubernetes.io subdomain": ({"spec.gpu.resourceName": "gpu.kubernetes.io/h100"},
                                                  "spec.gpu.resourceName"),
    "resourceName with the requests. prefix": ({"spec.gpu.resourceName": "requests.nvidia.com/gpu"},
                                               "spec.gpu.resourceName"),
    "resourceName with a name over 63": ({"spec.gpu.resourceName": "example.com/" + "g" * 64},
                                         "spec.gpu.resourceName"),
    # A calibration set no build would read, or from where a build must not fetch.
    "calibration for a precision quantize.py does not build": (
        {"spec.model.calibration": {"source": "s3://calib/set"}}, "spec.model.calibration"),
    "calibration on DJL": ({"spec.precision": "fp8", "spec.runtime": {"server": "djl"},
                            "spec.model.calibration": {"source": "s3://calib/set"}},
                           "spec.model.calibration"),
    "calibration from the Hub": ({"spec.precision": "fp8",
                                  "spec.model.calibration": {"source": "hf://datasets/abisee"}},
                                 "spec.model.calibration.source"),
    "calibration on the engine cache's claim": ({"spec.precision": "fp8", "spec.model.calibration":
                                                 {"source": "pvc://kiln-engine-cache/sets"}},
                                                "spec.model.calibration"),
    "calibration climbing out of its claim": ({"spec.precision": "fp8", "spec.model.calibration":
                                               {"source": "pvc://sets/../../etc"}},
                                              "spec.model.calibration.source"),
    # A path in an NCCL setting: NCCL loads the library NCCL_NET_PLUGIN names.
    "NCCL plugin path": ({"spec.network": {"rdmaResource": "rdma/ib", "ncclEnv": [
        {"name": "NCCL_NET_PLUGIN", "value": "/engines/k/tokenizer/tokenizer.model"}]}},
        "spec.network.ncclEnv.0.value"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_crd_and_kiln_render_refuse_it_naming_the_field(tmp_path, case):
    changes, field = REFUSED[case]
    manifest = _manifest(changes)
    assert _crd_refuses(manifest), "the API server would store it"
    code, out, err = _render(tmp_path, manifest)
    assert code == 2 and out == "", err
    [line] = err.strip().splitlines()
    assert line.startswith(f"error: {field}: "), line


def test_a_gpu_type_outside_the_catalog_with_memory_needs_its_architecture(tmp_path):
    # Used to crash render (the type became the engine's architecture, 16 characters at most).
    code, _, err = _render(tmp_path, _manifest({"spec.gpu.type": "x" * 40, "spec.gpu.memoryGiB": 80}))
    assert code == 2
    assert err.startswith("error: spec.gpu.arch: required for 'xxxx"), err


def test_a_gpu_type_outside_the_catalog_is_scheduled_on_it_and_builds(tmp_path):
    manifest = _manifest({"spec.gpu": {"type": "NVIDIA-RTX-A6000", "memoryGiB": 47.5, "arch": "sm86"}})
    assert not _crd_refuses(manifest)
    code, out, err = _render(tmp_path, manifest)
    assert code == 0, err
    objects = json.loads(out)["items"]
    pods = {o["kind"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Job", "Deployment")}
    for kind, pod in pods.items():
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-RTX-A6000"}, kind
    env = {e["name"]: e.get("value") for e in pods["Job"]["containers"][0]["env"]}
    build = parse_build_spec(json.loads(env["KILN_BUILD_SPEC"]))  # what the runtime accepts
    assert build.gpu_arch == "sm86"
    engine = next(o for o in objects if o["kind"] == "LLMEngine")
    assert engine["spec"]["gpuArch"] == "sm86" and engine["spec"]["gpuType"] == "NVIDIA-RTX-A6000"
    for obj in objects:
        if crd_schemas.has_schema(obj):
            crd_schemas.validate(obj)
        elif obj["kind"] != "LLMEngine":
            kubernetes_validate.validate(obj, "1.33", strict=True)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_passes_the_crd_rules(path):
    for doc in yaml.safe_load_all(path.read_text()):
        assert cel_rules.violations(SCHEMA, doc) == []


def test_the_bounds_themselves_are_accepted(tmp_path):
    manifest = _manifest({"metadata.name": "a" + "-b" * 31,
                          "spec.engine.kvCacheFreeGpuMemFraction": 0.01, "spec.gpu.memoryGiB": 1024,
                          "spec.gpu.resourceName": "example.com/" + "g" * 63,
                          "spec.autoscaling": {"mode": "hpa", "maxReplicas": 2,
                                               "targetKVCacheUtilization": 0.01,
                                               "scaleDownStabilizationSeconds": 3600}})
    assert not _crd_refuses(manifest)
    code, out, err = _render(tmp_path, manifest)
    assert code == 0, err
    hpa = next(o for o in json.loads(out)["items"] if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "10m"
    kubernetes_validate.validate(hpa, "1.33", strict=True)


@pytest.mark.parametrize("namespace", [None, ""])
def test_a_null_or_empty_namespace_is_the_default_one(tmp_path, namespace):
    # As kubectl and the API server read it: the request's namespace.
    code, out, err = _render(tmp_path, _manifest({"metadata.namespace": namespace}))
    assert code == 0, err
    assert {o["metadata"].get("namespace") for o in json.loads(out)["items"]} <= {"default", None}
