"""The real operator (kopf + handlers + reconcile) against the API emulator.

What the emulator stands in for is listed in kiln/demo/emulator.py. It does not validate
schemas or CEL rules: the invalid-spec cases below reach the operator here, where on a real
cluster most would already be refused by the CRD (tests/unit checks those rules). The
operator must still handle them, because an older CRD or a disabled validation lets them in.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import subprocess
import sys
import time

import kopf
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kiln.api.common import API_VERSION, Reason
from kiln.autoscale import Decision
from kiln.decide import Actions, Observed
from kiln.decide.conditions import get_condition, is_true
from kiln.controller.cache import CACHED_KINDS, CachedKubeApi, _index_id
from kiln.controller.context import OperatorContext
from kiln.controller.execute import write_status
from kiln.controller.models import ModelResolver
from kiln.controller.reconcile import reconcile_service, record
from kiln.decide.status import conclude, parse_status, status_wire
from kiln.render.meta import ENGINE_KEY_ANNOTATION

from ..conftest import ROOT

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
DJL = yaml.safe_load((ROOT / "examples" / "qwen2.5-7b-djl.yaml").read_text())


def _conditions(obj):
    return (obj.get("status") or {}).get("conditions", [])


def _service(sb, name="mistral-7b"):
    return sb.get("llmservices", name, NS)


def _operator_metrics(sb):
    text = generate_latest(sb.operator_context.telemetry.registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def _with_condition(sb, name, type_, status=None, timeout=None):
    """The service once it has condition ``type_`` (with ``status``, if given)."""
    def found():
        svc = _service(sb, name)
        condition = svc and get_condition(_conditions(svc), type_)
        return svc if condition and status in (None, condition["status"]) else None
    waited = {} if timeout is None else {"timeout": timeout}
    return await sb.wait_for(found, what=f"{name}: {type_}{'=' + status if status else ''}", **waited)


def _ready(sb, name="mistral-7b"):
    svc = _service(sb, name)
    return svc is not None and is_true(_conditions(svc), "Ready")


async def _serving_mistral(sb):
    """The operator and the simulated kubelet started, and the example Mistral service Ready."""
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(copy.deepcopy(MISTRAL))
    await sb.wait_for(lambda: _ready(sb), what="Ready")


@pytest.fixture
async def sandbox(make_sandbox):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        yield sb


async def test_create_builds_the_engine_then_deploys_then_ready(sandbox):
    sb = sandbox
    await sb.start_operator()
    await sb.create(copy.deepcopy(MISTRAL))

    jobs = await sb.wait_for(lambda: sb.objects("jobs"), what="the build Job")
    assert len(jobs) == 1
    svc = await _with_condition(sb, "mistral-7b", "EngineReady")
    engine_ready = get_condition(_conditions(svc), "EngineReady")
    assert engine_ready["status"] == "False" and engine_ready["reason"] == "EngineBuilding"
    assert get_condition(_conditions(svc), "Reconciling")["status"] == "True"
    assert sb.objects("deployments") == [], "nothing is deployed before the engine is built"

    sb.start_kubelet()  # completes the Job, then marks the pods ready
    await sb.wait_for(lambda: _ready(sb), what="Ready=True")
    svc = _service(sb)
    status = svc["status"]
    assert status["observedGeneration"] == svc["metadata"]["generation"]
    assert is_true(status["conditions"], "EngineReady")
    assert get_condition(status["conditions"], "Stalled")["status"] == "False"
    assert get_condition(status["conditions"], "Reconciling")["status"] == "False"
    assert status["endpoint"] == f"http://mistral-7b-server.{sb.ns(NS)}.svc:8000"
    assert status["plan"]["fits"] is True and status["tpPp"] == "1x1"
    assert status["readyReplicas"] == 1
    # The loop closed: the observer scraped the (simulated) Triton's KV block metrics over
    # HTTP, and the reconciles that follow keep what it wrote.
    await sb.wait_for(lambda: "kvCacheTokensError" in (_service(sb)["status"].get("plan") or {}),
                      what="the observed KV-cache tokens")
    svc = _service(sb)
    status = svc["status"]
    assert abs(status["plan"]["kvCacheTokensError"]) <= 0.05
    assert status["plan"]["observedKVCacheTokens"] > 0
    assert status["kvCacheUtilization"] == "35%"
    [deployment] = sb.objects("deployments")
    [engine] = sb.objects("llmengines")
    assert deployment["metadata"]["annotations"][ENGINE_KEY_ANNOTATION] == engine["spec"]["key"]
    assert is_true(_conditions(engine), "Ready")
    assert [s["metadata"]["name"] for s in sb.objects("services")] == ["mistral-7b-server"]
    await sb.wait_for(lambda: {"BuildStarted", "BuildSucceeded"} <= {
        e.get("reason") for _, e in sb.events("events")}, what="the build Events")

    # Steady state: nothing changes, so nothing is written (the resync tick is 30 s away).
    before = sb.changes("llmservices", "deployments")
    await asyncio.sleep(1.5)
    assert sb.changes("llmservices", "deployments") == before

    # A reconcile keeps the observer's figures while the prediction they answer stands, and
    # drops them when the prediction moved (here: as if observed against an older one).
    models = ModelResolver(allow_download=False)
    again = await reconcile_service(copy.deepcopy(_service(sb)), sb.api, models, "now")
    assert status_wire(again.status)["plan"] == status["plan"]
    older = copy.deepcopy(_service(sb))
    older["status"]["plan"]["kvCacheTokens"] += 4096
    moved = await reconcile_service(older, sb.api, models, "now")
    assert "observedKVCacheTokens" not in status_wire(moved.status)["plan"]

    # The operator's own metrics, read with prometheus_client's text parser.
    metrics = _operator_metrics(sb)
    assert metrics[("kiln_engine_builds_total", (("result", "started"),))] == 1
    assert metrics[("kiln_engine_builds_total", (("result", "succeeded"),))] == 1
    assert metrics[("kiln_engine_build_duration_seconds_count", ())] == 1
    labels = (("namespace", sb.ns(NS)), ("service", "mistral-7b"))
    assert metrics[("kiln_service_ready_replicas", labels)] == 1
    assert metrics[("kiln_plan_kv_cache_tokens", labels)] == status["plan"]["kvCacheTokens"]
    assert metrics[("kiln_observed_kv_cache_tokens", labels)] == status["plan"]["observedKVCacheTokens"]
    assert metrics[("kiln_service_condition", (("condition", "Ready"),) + labels)] == 1
    assert metrics[("kiln_reconcile_duration_seconds_count", (("kind", "LLMService"),))] >= 2

    # A second service of the same model reuses the engine: no second build.
    other = copy.deepcopy(MISTRAL)
    other["metadata"]["name"] = "mistral-7b-b"
    await sb.create(other)
    await sb.wait_for(lambda: _ready(sb, "mistral-7b-b"), what="the second service Ready")
    assert len(sb.objects("jobs")) == 1
    # kopf posts Events from a queue, after the status write they tell of: wait for it.
    await sb.wait_for(lambda: any(e.get("reason") == "EngineReused" for _, e in sb.events("events")),
                      what="the EngineReused Event")
    assert _operator_metrics(sb)[("kiln_engine_cache_hits_total", ())] == 1


def _reconciles(sb):
    return _operator_metrics(sb)[("kiln_reconcile_duration_seconds_count", (("kind", "LLMService"),))]


async def test_a_settled_service_s_new_kv_figures_cost_a_status_write_not_a_reconcile(sandbox):
    # The observer scrapes every Ready service every minute; at a thousand services a full
    # reconcile per changed figure doubled the reconciles and queued behind them.
    sb = sandbox
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(copy.deepcopy(MISTRAL))
    await sb.wait_for(lambda: _ready(sb) and _service(sb)["status"].get("kvCacheUtilization") == "35%",
                      what="Ready, with the observed KV utilisation")
    reconciles, children = _reconciles(sb), sb.changes("deployments", "services", "jobs", "llmengines")

    sb.cluster.load["mistral-7b"] = 0.7
    await sb.wait_for(lambda: _service(sb)["status"].get("kvCacheUtilization") == "70%",
                      what="the new KV utilisation in the status")
    # The gauge is set once the status write has returned, which can be after the watch has
    # shown the write to this test: wait for it rather than read it once.
    labels = (("namespace", sb.ns(NS)), ("service", "mistral-7b"))
    await sb.wait_for(lambda: _operator_metrics(sb)[("kiln_service_kv_cache_utilization", labels)] == 0.7,
                      what="the new KV utilisation in the operator's gauge")
    assert _reconciles(sb) == reconciles
    assert sb.changes("deployments", "services", "jobs", "llmengines") == children


async def test_a_timer_s_status_write_from_an_older_view_is_refused_not_written_over_a_newer_one(sandbox):
    # A timer observes a settled service through the operator's view of it, and a reconcile's
    # status write (a spec change rolling out) can land before the watch brings that view up
    # to date. An autoscale tick's record made from the older view carried its conditions back
    # over the newer ones: Ready True over RollingOut at the new generation (seen on the real
    # API server, on a loaded machine). Made on the view's resourceVersion, it is refused.
    sb = sandbox
    await _serving_mistral(sb)
    await sb.stop_operator()
    view = copy.deepcopy(_service(sb))  # the timer's view: Ready
    rolling = parse_status(view["status"])
    conclude(rolling, stalled=False, reconciling=True, reason=Reason.ROLLING_OUT,
             message="0/1 replicas ready", now="later", generation=2)
    patch: dict = {}
    write_status(patch, view["status"], Actions(status=rolling))
    await sb.api.patch_status(view, patch)  # the reconcile's write, not yet in the view

    hold = Observed(decision=Decision(desired=1, reason="hold: a new reading"), current=1)
    ctx = OperatorContext(api=sb.api)
    await record(kopf.Body(view), ctx, hold)
    live = await sb.api.get(API_VERSION, "LLMService", "mistral-7b", view["metadata"]["namespace"])
    assert get_condition(_conditions(live), "Reconciling")["reason"] == "RollingOut"
    assert not is_true(_conditions(live), "Ready")
    assert "hold: a new reading" not in str(live["status"])

    # From a view that has the newer status, the same observation is written.
    await record(kopf.Body(live), ctx, hold)
    live = await sb.api.get(API_VERSION, "LLMService", "mistral-7b", view["metadata"]["namespace"])
    assert get_condition(_conditions(live), "ScalingActive")["message"] == "hold: a new reading"
    assert get_condition(_conditions(live), "Reconciling")["reason"] == "RollingOut"


async def test_a_settled_service_without_an_openai_endpoint_is_reconciled_without_a_write(sandbox):
    # A DJL service has no OpenAI endpoint, so its status has no ``endpoints``; when the CRD
    # defaulted status.endpoints to {}, the real API server put it back after every removal,
    # and each full resync sent the removal again: a write that changed nothing.
    sb = sandbox
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(copy.deepcopy(DJL))
    await sb.wait_for(lambda: _ready(sb, "qwen-7b-djl"), what="Ready=True")
    svc = _service(sb, "qwen-7b-djl")
    actions = await reconcile_service(copy.deepcopy(svc), sb.api, ModelResolver(allow_download=False), "now")
    patch: dict = {}
    write_status(patch, svc["status"], actions)
    assert patch == {}


async def test_spec_change_rebuilds_and_rolls_only_after_the_new_engine_is_ready(sandbox):
    sb = sandbox
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(copy.deepcopy(MISTRAL))
    await sb.wait_for(lambda: _ready(sb), what="first Ready")
    [old_engine] = sb.objects("llmengines")
    old_key = old_engine["spec"]["key"]

    await sb.stop_kubelet()  # hold the new build
    await sb.patch_spec(NS, "mistral-7b", {"precision": "fp8"})
    await sb.wait_for(lambda: len(sb.objects("jobs")) == 2, what="the second build Job")
    svc = await sb.wait_for(
        lambda: (s := _service(sb)) and s["status"].get("observedGeneration") == 2 and s,
        what="generation 2 observed")
    assert get_condition(_conditions(svc), "EngineReady")["reason"] == "EngineBuilding"
    assert "previous engine keeps serving" in get_condition(_conditions(svc), "Ready")["message"]
    [deployment] = sb.objects("deployments")
    assert deployment["metadata"]["annotations"][ENGINE_KEY_ANNOTATION] == old_key

    sb.start_kubelet()
    await sb.wait_for(lambda: _ready(sb) and _service(sb)["status"]["engine"]["key"] != old_key,
                      what="Ready on the new engine")
    new_key = _service(sb)["status"]["engine"]["key"]
    await sb.wait_for(lambda: sb.objects("deployments")[0]["metadata"]["annotations"]
                      [ENGINE_KEY_ANNOTATION] == new_key, what="the rollout")
    assert len(sb.objects("llmengines")) == 2  # the old engine stays cached


async def test_restart_mid_build_creates_no_second_job(sandbox):
    sb = sandbox
    await sb.start_operator()
    await sb.create(copy.deepcopy(MISTRAL))
    await sb.wait_for(lambda: sb.objects("jobs"), what="the build Job")
    await _with_condition(sb, "mistral-7b", "EngineReady")  # status written
    await sb.stop_operator()

    await sb.start_operator()  # resumes every object it finds
    sb.start_kubelet()
    await sb.wait_for(lambda: _ready(sb), what="Ready after the restart")
    created = [o["metadata"]["name"] for t, o in sb.events("jobs") if t == "ADDED"]
    assert len(created) == 1, created
    assert len(sb.objects("llmengines")) == 1


def _invalid(spec_change):
    manifest = copy.deepcopy(MISTRAL)
    manifest["metadata"]["name"] = "bad"
    spec = manifest["spec"]
    for key, value in spec_change.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return manifest


INVALID = {
    "wrong-precision": ({"precision": "fp9"}, "spec.precision"),
    "tp-times-pp": ({"gpus": 2, "parallelism": {"tensor": 4, "pipeline": 1}}, "spec.parallelism"),
    "unknown-field": ({"replica": 2}, "spec.replica: unknown field"),
    "negative-gpus": ({"gpus": -1}, "spec.gpus"),
    "missing-source": ({"model": None}, "spec.model: required"),
    "scale-from-zero": ({"autoscaling": {"mode": "builtin", "minReplicas": 0, "maxReplicas": 2}},
                        "spec.autoscaling.minReplicas: 0 would never wake in mode builtin"),
}


# Where a real API server's refusal points for each case.
API_FIELD = {"wrong-precision": "spec.precision", "tp-times-pp": "spec", "unknown-field": "spec.replica",
             "negative-gpus": "spec.gpus", "missing-source": "spec.model",
             "scale-from-zero": "spec.autoscaling.minReplicas"}


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid_spec_is_stalled_with_the_render_message_and_nothing_created(sandbox, backend, tmp_path, case):
    change, field = INVALID[case]
    manifest = _invalid(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(manifest))
    cli = subprocess.run([sys.executable, "-m", "kiln", "render", "-f", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    cli_message = cli.stderr.strip()
    assert field in cli_message

    sb = sandbox
    if backend == "real":
        # A real API server refuses it first (the CRD's schema and CEL rules, unknown fields
        # with kubectl's strict field validation), naming the field; nothing reaches the operator.
        with pytest.raises(RuntimeError) as refused:
            await sb.create(manifest)
        # 422 Invalid (schema, CEL) or 400 BadRequest (strict decoding of an unknown field).
        refusal = str(refused.value)
        assert (" 422 " in refusal or " 400 " in refusal) and API_FIELD[case] in refusal, refusal
        assert sb.objects("llmservices") == []
        return
    await sb.start_operator()
    await sb.create(manifest)
    svc = await _with_condition(sb, "bad", "Stalled")
    stalled = get_condition(_conditions(svc), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "SpecInvalid"
    assert stalled["message"] in cli_message  # the CLI may prefix the file name
    assert get_condition(_conditions(svc), "Ready")["status"] == "False"
    assert svc["status"]["observedGeneration"] == 1
    for plural in ("jobs", "deployments", "services", "llmengines"):
        assert sb.objects(plural) == [], plural
    # kopf posts Events from a background queue: they may trail the status.
    await sb.wait_for(lambda: any(e.get("type") == "Warning" and field in e.get("message", "")
                                  for _, e in sb.events("events")), what="the Warning Event")


async def test_missing_secret_is_stalled_naming_the_secret(sandbox):
    sb = sandbox
    manifest = copy.deepcopy(MISTRAL)
    manifest["spec"]["model"]["credentials"] = {"secretName": "hf-token"}
    await sb.start_operator()
    await sb.create(manifest)
    svc = await _with_condition(sb, "mistral-7b", "Stalled")
    stalled = get_condition(_conditions(svc), "Stalled")
    assert stalled["reason"] == "MissingDependency"
    assert "spec.model.credentials.secretName" in stalled["message"] and f"{sb.ns(NS)}/hf-token" in stalled["message"]
    assert sb.objects("jobs") == []


async def test_a_service_that_does_not_fit_shows_the_plan_and_builds_nothing(sandbox):
    sb = sandbox
    manifest = copy.deepcopy(MISTRAL)
    manifest["metadata"]["name"] = "too-big"
    manifest["spec"]["model"]["source"] = "hf://meta-llama/Llama-3.1-70B-Instruct"
    manifest["spec"]["precision"] = "bf16"
    await sb.start_operator()
    await sb.create(manifest)
    svc = await _with_condition(sb, "too-big", "Fits")
    fits = get_condition(_conditions(svc), "Fits")
    assert fits["status"] == "False" and fits["reason"] == "DoesNotFit"
    assert "GiB short" in fits["message"] and "would fit with gpus: 2" in fits["message"]
    assert get_condition(_conditions(svc), "Stalled")["status"] == "True"
    plan = svc["status"]["plan"]
    assert plan["fits"] is False and plan["weightBytesPerGpu"] > 80 * 2**30
    assert sb.objects("jobs") == [] and sb.objects("llmengines") == []


async def test_gpus_the_model_cannot_be_split_over_stall_the_service_naming_the_counts_that_can(sandbox):
    """The API server admits any GPU count; only the planner knows the model's heads and
    layers. Six GPUs of Mistral-7B (32 heads, 32 layers) have no layout: a status saying
    so and which counts have one, not a reconcile error retried for ever."""
    sb = sandbox
    manifest = copy.deepcopy(MISTRAL)
    manifest["metadata"]["name"] = "six"
    manifest["spec"]["gpus"] = 6
    del manifest["spec"]["parallelism"]
    await sb.start_operator()
    await sb.create(manifest)
    svc = await _with_condition(sb, "six", "Stalled")
    stalled = get_condition(_conditions(svc), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "SpecInvalid"
    assert stalled["message"].startswith("spec.gpus: 6 GPUs cannot be split over this model")
    assert stalled["message"].endswith("; gpus: 4 or 8 can")
    assert sb.objects("jobs") == [] and sb.objects("llmengines") == []
    assert sb.operator_error is None


async def test_a_precision_tensorrt_llm_cannot_build_for_the_gpu_creates_no_job(sandbox):
    sb = sandbox
    manifest = copy.deepcopy(MISTRAL)
    manifest["metadata"]["name"] = "awq-on-b200"
    manifest["spec"]["precision"] = "int4-awq"
    manifest["spec"]["gpu"] = {"type": "B200-180GB"}
    await sb.start_operator()
    await sb.create(manifest)
    svc = await _with_condition(sb, "awq-on-b200", "Fits")
    fits = get_condition(_conditions(svc), "Fits")
    assert fits["status"] == "False" and fits["reason"] == "NotBuildable"
    assert "sm100" in fits["message"] and "use precision: fp8 or nvfp4" in fits["message"]
    assert get_condition(_conditions(svc), "Stalled")["status"] == "True"
    assert sb.objects("jobs") == [] and sb.objects("llmengines") == []


# Seconds instead of minutes: a 0.3 s control period, a 1 s sample window.
FAST_SCALING = {"autoscale_period": 0.3, "autoscale_timing": {"window_seconds": 1.0, "stale_seconds": 1.0}}


def autoscaled_mistral():
    """Mistral between 1 and 3 replicas, at 75 % KV, with a 2 s scale-down stabilization."""
    manifest = copy.deepcopy(MISTRAL)
    manifest["spec"]["autoscaling"] = {"mode": "builtin", "minReplicas": 1, "maxReplicas": 3,
                                       "targetKVCacheUtilization": 0.75,
                                       "scaleDownStabilizationSeconds": 2}
    return manifest


@pytest.fixture
async def scaling_sandbox(make_sandbox):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.2, retry_delay=0.2, **FAST_SCALING) as sb:
        sb.add_namespace(NS)
        yield sb


async def test_builtin_autoscaler_follows_kv_pressure_and_holds_without_metrics(scaling_sandbox):
    sb = scaling_sandbox
    manifest = autoscaled_mistral()
    # A TTFT objective: the pods here export no first-response histogram, so the law's
    # correction stays at 1, and the operator exports it.
    manifest["spec"]["autoscaling"]["ttftP99Milliseconds"] = 2000
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(manifest)
    await sb.wait_for(lambda: _ready(sb), what="Ready")

    def deployment_replicas():
        return sb.objects("deployments")[0]["spec"]["replicas"]

    sb.cluster.load["mistral-7b"] = 2.4  # demand for 2.4 replicas' worth of KV blocks
    await sb.wait_for(lambda: deployment_replicas() == 3, timeout=30, what="3 replicas")
    # kopf writes the timer's status after the workload is applied: wait for it.
    svc = await sb.wait_for(lambda: (s := _service(sb))["status"].get("desiredReplicas") == 3 and s,
                            what="status.desiredReplicas")
    assert svc["spec"].get("replicas", 1) == 1  # the user's spec is never written
    assert get_condition(_conditions(svc), "ScalingActive")["status"] == "True"
    assert svc["status"]["autoscaling"]["lastScaleTime"]
    await sb.wait_for(lambda: any(e.get("reason") == "ScaledUp" for _, e in sb.events("events")),
                      what="a ScaledUp Event")
    labels = (("namespace", svc["metadata"]["namespace"]), ("service", "mistral-7b"))
    assert _operator_metrics(sb)[("kiln_autoscaler_demand_correction", labels)] == 1.0

    sb.cluster.metrics_outage.add("mistral-7b")  # metrics vanish while load is low
    sb.cluster.load["mistral-7b"] = 0.2
    svc = await _with_condition(sb, "mistral-7b", "ScalingActive", "False")
    assert get_condition(_conditions(svc), "ScalingActive")["reason"] == "MetricsUnavailable"
    await asyncio.sleep(3)  # longer than the stabilization window
    assert deployment_replicas() == 3, "no scale-down without metrics"

    sb.cluster.metrics_outage.clear()
    await sb.wait_for(lambda: deployment_replicas() == 1, timeout=30, what="back to 1 replica")
    await sb.wait_for(lambda: any(e.get("reason") == "ScaledDown" for _, e in sb.events("events")),
                      what="a ScaledDown Event")
    await sb.wait_for(lambda: _service(sb)["status"].get("readyReplicas") == 1, what="status follows")

    # The objective removed (a merge patch's null), its correction gauge goes with it: a
    # stale value would keep KilnAutoscalerCorrectingTheModel firing.
    await sb.patch_spec(NS, "mistral-7b", {"autoscaling": {"ttftP99Milliseconds": None}})
    await sb.wait_for(lambda: ("kiln_autoscaler_demand_correction", labels) not in _operator_metrics(sb),
                      timeout=30, what="the correction gauge removed")
    assert "ttftP99Milliseconds" not in _service(sb)["spec"]["autoscaling"]


def _record(sb):
    return ((_service(sb).get("status") or {}).get("autoscaling") or {}).get("record")


def _wall(text):
    return datetime.datetime.fromisoformat(text).timestamp()


@pytest.fixture
async def record_sandbox(make_sandbox):
    """The scaling sandbox with a prior that shrinks over 30 s instead of two hours: at a
    constant load the record is written as the prior shrinks, a tenth of a replica (1.5 s)
    at a time."""
    timing = {**FAST_SCALING["autoscale_timing"], "headroom_prior_seconds": 30.0}
    async with make_sandbox(build_seconds=0.2, start_seconds=0.2, retry_delay=0.2,
                            autoscale_period=FAST_SCALING["autoscale_period"], autoscale_timing=timing) as sb:
        sb.add_namespace(NS)
        yield sb


async def test_the_autoscalers_record_survives_an_operator_restart(record_sandbox):
    """The law's record (what it learned of the service's demand) is written into the
    status, which the API server validates against the CRD, and a new operator goes on from
    it instead of starting a record afresh (and holding the prior's spare replicas for
    another hour)."""
    sb = record_sandbox
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(autoscaled_mistral())
    await sb.wait_for(lambda: _ready(sb), what="Ready")
    sb.cluster.load["mistral-7b"] = 1.2
    first = await sb.wait_for(lambda: (r := _record(sb)) and r.get("demand")
                              and _wall(r["savedAt"]) - _wall(r["startedAt"]) >= 3 and r,
                              timeout=30, what="a record of three seconds in the status")
    await sb.stop_operator()
    restart = time.time()
    await sb.start_operator()
    later = await sb.wait_for(lambda: (r := _record(sb)) and _wall(r["savedAt"]) > restart and r,
                              timeout=30, what="a record written by the new operator")
    # Begun before the restart, by as much as the first operator had recorded: restored, not
    # started afresh (the time with no operator is not counted as history).
    recorded = _wall(first["savedAt"]) - _wall(first["startedAt"])
    assert _wall(later["startedAt"]) <= restart - recorded + 1, (first, later)
    assert len(later["demand"].split()) > len(first["demand"].split())


MULTI_NODE = yaml.safe_load((ROOT / "examples" / "llama-3.1-405b-fp8-multinode.yaml").read_text())


async def _multi_node_namespace(sb, backend):
    """The model's Secret, and on the real server the chart's Roles that let the operator
    write a leader's Role there (granted only in the namespaces the chart lists)."""
    if backend == "real":
        sb.grant_chart_roles(NS, multi_node=True)
    await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})


async def test_a_multi_node_service_is_ready_when_its_groups_are_and_scales_by_group(scaling_sandbox, backend):
    sb = scaling_sandbox
    await _multi_node_namespace(sb, backend)
    manifest = copy.deepcopy(MULTI_NODE)
    # Two groups at most: the test scales from one group to two and counts them.
    manifest["spec"]["autoscaling"].update(targetKVCacheUtilization=0.75, scaleDownStabilizationSeconds=2,
                                           maxReplicas=2)
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(manifest)
    await sb.wait_for(lambda: _ready(sb, "llama-405b"), timeout=30, what="Ready")
    [lws] = sb.objects("leaderworkersets")
    assert lws["metadata"]["name"] == "llama-405b-group" and lws["spec"]["replicas"] == 1
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert sb.objects("deployments") == []
    assert {o["metadata"]["name"] for plural in ("roles", "rolebindings")  # the service's own
            for o in sb.objects(plural) if o["metadata"].get("ownerReferences")} == {"llama-405b-launcher"}
    assert {o["metadata"]["name"] for o in sb.objects("serviceaccounts") if o["metadata"].get("ownerReferences")} == {
        "llama-405b-launcher", "llama-405b-server"}
    svc = _service(sb, "llama-405b")
    assert svc["status"]["tpPp"] == "8x2" and svc["status"]["readyReplicas"] == 1
    if backend == "real":  # LWS v0.8.0's controller made the group: a leader and a worker StatefulSet
        assert {o["metadata"]["name"] for o in sb.objects("statefulsets")} == {"llama-405b-group",
                                                                                "llama-405b-group-0"}
        pods = {o["metadata"]["name"]: o for o in sb.objects("pods")
                if "leaderworkerset.sigs.k8s.io/name" in o["metadata"]["labels"]}
        assert set(pods) == {"llama-405b-group-0", "llama-405b-group-0-1"}
        worker = pods["llama-405b-group-0-1"]
        assert worker["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"] == "1"
        env = {e["name"]: e.get("value") for e in worker["spec"]["containers"][0].get("env") or []}
        assert env["LWS_WORKER_INDEX"] == "1" and env["LWS_GROUP_SIZE"] == "2"
        assert env["LWS_LEADER_ADDRESS"].startswith("llama-405b-group-0.llama-405b-group.")

    # KV pressure on the group's leader (rank 0 reports the whole engine's KV blocks).
    sb.cluster.load["llama-405b"] = 1.6
    await sb.wait_for(lambda: sb.objects("leaderworkersets")[0]["spec"]["replicas"] == 2,
                      timeout=30, what="a second group")
    await sb.wait_for(lambda: _service(sb, "llama-405b")["status"].get("readyReplicas") == 2,
                      what="two ready groups in status")
    assert _service(sb, "llama-405b")["spec"].get("replicas", 1) == 1


async def test_a_group_is_ready_under_a_leader_worker_set_controller_before_v0_9(scaling_sandbox, backend):
    """LWS before v0.9.0 writes no status.observedGeneration (see tests/unit/test_group_rollout.py):
    the group serves, and the service is Ready on it."""
    sb = scaling_sandbox
    sb.cluster.group_observes_generation = False
    await _multi_node_namespace(sb, backend)
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(copy.deepcopy(MULTI_NODE))
    await sb.wait_for(lambda: _ready(sb, "llama-405b"), timeout=30, what="Ready")
    [lws] = sb.objects("leaderworkersets")
    assert lws["status"]["readyReplicas"] == 1 and "observedGeneration" not in lws["status"]


async def test_a_child_deleted_by_someone_else_is_made_again_at_once_not_at_the_next_resync(sandbox):
    # controller-runtime's Owns() requeues the owner on its child's events; Kiln's resync tick
    # came every 30 s, so a Deployment deleted by mistake stayed gone for up to that long.
    sb = sandbox
    await _serving_mistral(sb)
    for plural in ("deployments", "services"):
        child = sb.get(plural, "mistral-7b-server", sb.ns(NS))
        await sb.api.delete(child)
        await sb.wait_for(lambda: (o := sb.get(plural, "mistral-7b-server", sb.ns(NS))) is not None
                          and o["metadata"]["uid"] != child["metadata"]["uid"],
                          timeout=5, what=f"the {plural[:-1]} made again")
    await sb.wait_for(lambda: _ready(sb), what="Ready again")


async def test_a_spec_change_deletes_the_children_it_no_longer_asks_for(sandbox):
    """A scaler left behind after a change of autoscaling.mode would go on writing the
    service's replicas against the builtin autoscaler; a NetworkPolicy left behind would
    keep its pods fenced. Deleted, with an Event; an object that is not the service's stays."""
    sb = sandbox
    manifest = copy.deepcopy(MISTRAL)
    manifest["spec"]["autoscaling"] = {"mode": "hpa", "minReplicas": 1, "maxReplicas": 3}
    manifest["spec"]["networkPolicy"] = {"enabled": True}
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(manifest)
    await sb.wait_for(lambda: _ready(sb), what="Ready")
    hpa = sb.get("horizontalpodautoscalers", "mistral-7b", NS)
    assert hpa is not None and sb.get("networkpolicies", "mistral-7b-server", NS) is not None
    assert "HorizontalPodAutoscaler/mistral-7b" in _service(sb)["status"]["children"]
    theirs = copy.deepcopy(hpa)  # a platform team's own HPA beside it, under another name
    theirs["metadata"] = {"name": "team-hpa", "namespace": hpa["metadata"]["namespace"]}
    theirs["spec"]["scaleTargetRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    await sb.create(theirs)

    await sb.patch_spec(NS, "mistral-7b", {"autoscaling": {"mode": "builtin"}, "networkPolicy": {"enabled": False}})
    await sb.wait_for(lambda: sb.get("horizontalpodautoscalers", "mistral-7b", NS) is None
                      and sb.get("networkpolicies", "mistral-7b-server", NS) is None, what="both deleted")
    await sb.wait_for(lambda: sum(e.get("reason") == "Removed" for _, e in sb.events("events")) >= 2,
                      what="two Removed Events")
    await sb.wait_for(lambda: _ready(sb) and "HorizontalPodAutoscaler/mistral-7b" not in
                      _service(sb)["status"]["children"], what="the inventory without them")
    assert sb.get("horizontalpodautoscalers", "team-hpa", NS) is not None
    assert sb.get("deployments", "mistral-7b-server", NS) is not None


async def _ready_with_an_hpa_then_stopped(sb):
    """Mistral Ready, then moved to an HPA at generation 2, then the operator stopped: the
    service as it is then."""
    await _serving_mistral(sb)
    await sb.patch_spec(NS, "mistral-7b", {"autoscaling": {"mode": "hpa", "minReplicas": 1, "maxReplicas": 3}})
    await sb.wait_for(lambda: (svc := _service(sb)) and svc["status"].get("observedGeneration") == 2
                      and _ready(sb) and sb.get("horizontalpodautoscalers", "mistral-7b", NS), what="the HPA")
    await sb.stop_operator()
    return _service(sb)


async def test_what_an_interrupted_reconcile_applied_goes_after_the_next_spec_change(sandbox):
    """An operator stopped after a reconcile applied an HPA and before its status write: the
    status still says the generation before and names no HPA. The spec moves on again; the
    HPA it no longer asks for is found (every object the service could have made is read
    once) and deleted."""
    sb = sandbox
    svc = await _ready_with_an_hpa_then_stopped(sb)
    assert "HorizontalPodAutoscaler/mistral-7b" in svc["status"]["children"]
    await sb.api.patch_status(svc, {"observedGeneration": 1, "children": [
        entry for entry in svc["status"]["children"] if entry != "HorizontalPodAutoscaler/mistral-7b"]})
    await sb.patch_spec(NS, "mistral-7b", {"autoscaling": {"mode": "builtin"}})

    await sb.start_operator()
    await sb.wait_for(lambda: sb.get("horizontalpodautoscalers", "mistral-7b", NS) is None, what="the HPA deleted")
    await sb.wait_for(lambda: _ready(sb) and _service(sb)["status"].get("observedGeneration") == 3,
                      what="Ready at the new generation")
    assert sb.get("deployments", "mistral-7b-server", NS) is not None


async def test_a_leftover_the_watch_cache_has_not_brought_yet_is_read_from_the_api_and_deleted(sandbox):
    """A NetworkPolicy the inventory names and the spec no longer asks for, reconciled
    before the watch cache has it (made by one generation, unwanted by the next within the
    cache's lag): the cache's miss is no answer for an object the service may have made. It
    is read from the API server and deleted, not dropped from the inventory and left there."""
    sb = sandbox
    await sb.start_operator()
    sb.start_kubelet()
    manifest = copy.deepcopy(MISTRAL)
    manifest["spec"]["networkPolicy"] = {"enabled": True}
    await sb.create(manifest)
    await sb.wait_for(lambda: _ready(sb) and "NetworkPolicy/mistral-7b-server" in _service(sb)["status"]["children"],
                      what="Ready with its NetworkPolicy")
    assert sb.get("networkpolicies", "mistral-7b-server", NS) is not None
    await sb.stop_operator()
    await sb.patch_spec(NS, "mistral-7b", {"networkPolicy": {"enabled": False}})

    behind = CachedKubeApi(sb.api, {_index_id(kind.plural): {} for kind in CACHED_KINDS.values()})
    actions = await reconcile_service(copy.deepcopy(_service(sb)), behind, ModelResolver(allow_download=False), "now")
    assert sb.get("networkpolicies", "mistral-7b-server", NS) is None
    assert "NetworkPolicy/mistral-7b-server" not in status_wire(actions.status)["children"]
    assert "Deployment/mistral-7b-server" in status_wire(actions.status)["children"]


async def test_a_child_the_inventory_lacks_at_its_generation_is_recorded_then_applied(sandbox):
    """As after an operator upgrade that renders a new kind: at the generation the status
    covers, the spec asks for an HPA the status does not name and the cluster does not hold.
    The inventory names it (a status write), and the reconcile after applies it."""
    sb = sandbox
    svc = await _ready_with_an_hpa_then_stopped(sb)
    await sb.api.patch_status(svc, {"children": [
        entry for entry in svc["status"]["children"] if entry != "HorizontalPodAutoscaler/mistral-7b"]})
    await sb.api.delete(sb.get("horizontalpodautoscalers", "mistral-7b", NS))
    await sb.wait_for(lambda: sb.get("horizontalpodautoscalers", "mistral-7b", NS) is None, what="the HPA gone")

    await sb.start_operator()
    await sb.wait_for(lambda: sb.get("horizontalpodautoscalers", "mistral-7b", NS), what="the HPA applied again")
    svc = _service(sb)
    assert "HorizontalPodAutoscaler/mistral-7b" in svc["status"]["children"]
    assert svc["status"]["observedGeneration"] == 2 and _ready(sb)


async def test_a_delete_reaches_only_the_object_that_was_read(sandbox):
    """KubeApi.delete carries the UID it read: an object made again under that name since
    (someone else's) is refused by the API server, 409, and stays."""
    sb = sandbox
    namespace = sb.ns(NS)
    made = await sb.api.apply({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "theirs", "namespace": namespace}, "data": {"a": "1"}})
    stale = {**made, "metadata": {**made["metadata"], "uid": "a-uid-read-before"}}
    await sb.api.delete(stale)
    assert sb.get("configmaps", "theirs", NS) is not None
    await sb.api.delete(made)
    assert sb.get("configmaps", "theirs", NS) is None


async def test_the_group_gives_way_to_a_deployment_once_it_serves(scaling_sandbox, backend):
    """16 GPUs over two nodes down to the 8 of one: the LeaderWorkerSet serves until the new
    Deployment has a ready replica, and is deleted then (its pods with it)."""
    sb = scaling_sandbox
    await _multi_node_namespace(sb, backend)
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(copy.deepcopy(MULTI_NODE))
    await sb.wait_for(lambda: _ready(sb, "llama-405b"), timeout=30, what="Ready on the group")

    # The engine for 8 GPUs built by a service of its own first: then no build waits for the
    # kubelet, and with the kubelet stopped the new Deployment's pods stay pending.
    single = copy.deepcopy(MULTI_NODE)
    single["metadata"]["name"], single["spec"]["gpus"] = "llama-405b-single", 8
    await sb.create(single)
    await sb.wait_for(lambda: _ready(sb, "llama-405b-single"), timeout=30, what="the 8-GPU engine built")
    await sb.stop_kubelet()
    await sb.patch_spec(NS, "llama-405b", {"gpus": 8})
    await sb.wait_for(lambda: sb.get("deployments", "llama-405b-server", NS), what="the Deployment")
    await sb.wait_for(lambda: sb.get("roles", "llama-405b-launcher", NS) is None, what="the launcher's Role deleted")
    # The reconcile that applied the Deployment wrote this status after its deletions.
    await sb.wait_for(lambda: (s := _service(sb, "llama-405b"))["status"].get("observedGeneration") == 2
                      and get_condition(_conditions(s), "Reconciling")["reason"] == "RollingOut",
                      what="rolling out on the Deployment")
    assert sb.get("leaderworkersets", "llama-405b-group", NS) is not None, "deleted before the Deployment serves"
    assert not _ready(sb, "llama-405b")
    assert "LeaderWorkerSet/llama-405b-group" in _service(sb, "llama-405b")["status"]["children"]

    sb.start_kubelet()
    await sb.wait_for(lambda: sb.get("leaderworkersets", "llama-405b-group", NS) is None, timeout=60,
                      what="the group deleted")
    await sb.wait_for(lambda: _ready(sb, "llama-405b"), what="Ready on the Deployment")
    assert sb.get("roles", "llama-405b-launcher", NS) is None
    assert _service(sb, "llama-405b")["status"]["children"] == [
        "Deployment/llama-405b-server", "PodDisruptionBudget/llama-405b-server", "Service/llama-405b-server",
        "ServiceAccount/llama-405b-server"]


async def test_without_the_leader_worker_set_api_a_multi_node_service_stalls_with_the_install_hint(
        make_sandbox, backend):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            missing_apis=("leaderworkerset.x-k8s.io/v1/leaderworkersets",)) as sb:
        sb.add_namespace(NS)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(copy.deepcopy(MULTI_NODE))
        await sb.create(copy.deepcopy(MISTRAL))  # a single-node service is unaffected
        svc = await _with_condition(sb, "llama-405b", "Stalled", "True")
        stalled = get_condition(_conditions(svc), "Stalled")
        assert stalled["reason"] == "MissingDependency"
        assert "LeaderWorkerSet API" in stalled["message"]
        assert "kubectl apply --server-side -f https://github.com/kubernetes-sigs/lws/releases" in stalled["message"]
        await sb.wait_for(lambda: _ready(sb), what="the single-node service Ready")
        assert [j["metadata"]["name"] for j in sb.objects("jobs")] == \
            [_service(sb)["status"]["engine"]["buildJob"]], "nothing built for the stalled service"
        assert sb.operator_error is None


async def test_a_failed_build_names_its_step_and_output_and_the_previous_engine_keeps_serving(
        make_sandbox, backend):
    # On the real server the Job controller retries the failed Pod (backoffLimit 2) with its
    # back-off, 10 s doubling (kubernetes.io/docs/concepts/workloads/controllers/job/, "Pod
    # backoff failure policy"), before the Job fails.
    failing: set[str] = set()
    failed_within = 90 if backend == "real" else None
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            fail_builds=lambda job: job["metadata"]["name"] in failing) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(copy.deepcopy(MISTRAL))
        await sb.wait_for(lambda: _ready(sb), what="Ready on the first engine")
        old_key, old_job = (_service(sb)["status"]["engine"][k] for k in ("key", "buildJob"))

        await sb.stop_kubelet()
        await sb.patch_spec(NS, "mistral-7b", {"precision": "fp8"})
        [new_job] = await sb.wait_for(lambda: [j["metadata"]["name"] for j in sb.objects("jobs")
                                                if j["metadata"]["name"] != old_job], what="the second build Job")
        failing.add(new_job)
        sb.start_kubelet()
        svc = await _with_condition(sb, "mistral-7b", "Stalled", "True", timeout=failed_within)
        engine_ready = get_condition(_conditions(svc), "EngineReady")
        assert engine_ready["status"] == "False" and engine_ready["reason"] == "EngineBuildFailed"
        message = engine_ready["message"]
        assert f"{sb.ns(NS)}/{new_job} failed at step engine (container build, exit code 1)" in message
        assert "CUDA runtime error in cudaMalloc: out of memory" in message
        assert "previous engine keeps serving" in message and "delete the Job to retry" in message
        # No rollout of the broken engine: the workload still runs the old one.
        [deployment] = sb.objects("deployments")
        assert deployment["metadata"]["annotations"][ENGINE_KEY_ANNOTATION] == old_key
        engines = {e["spec"]["key"]: e for e in sb.objects("llmengines")}
        assert is_true(_conditions(engines[old_key]), "Ready")
        [broken] = [e for k, e in engines.items() if k != old_key]
        assert get_condition(_conditions(broken), "Ready")["reason"] == "EngineBuildFailed"
        await sb.wait_for(lambda: any(e.get("reason") == "BuildFailed" and "out of memory" in e.get("message", "")
                                      for e in sb.objects("events")), what="the BuildFailed Event")
        # Retries are the Job's own (backoffLimit); the operator never creates a second Job for it.
        await asyncio.sleep(1.0)
        assert [n for t, o in sb.events("jobs") if t == "ADDED" for n in [o["metadata"]["name"]]].count(new_job) == 1

        # Deleted as the message says (as `kubectl delete` does it, its pods with it), the
        # build starts again at once (not at the next resync).
        failing.discard(new_job)
        failed = sb.get("jobs", new_job, sb.ns(NS))
        failed_pods = {p["metadata"]["uid"] for p in sb.objects("pods")
                       if (p["metadata"].get("labels") or {}).get("job-name") == new_job}
        assert failed_pods
        await sb.api.delete(failed, background=True)
        await sb.wait_for(lambda: (j := sb.get("jobs", new_job, sb.ns(NS))) is not None
                          and j["metadata"]["uid"] != failed["metadata"]["uid"],
                          timeout=5, what="the build Job made again")
        await sb.wait_for(lambda: not failed_pods & {p["metadata"]["uid"] for p in sb.objects("pods")},
                          timeout=30, what="the failed build's pods gone with its Job")
        await sb.wait_for(lambda: _ready(sb) and _service(sb)["status"]["engine"]["key"] != old_key,
                          timeout=failed_within or 20, what="Ready on the new engine")
        assert sb.operator_error is None


async def test_deleting_a_service_mid_build_leaves_no_job_and_an_engine_the_next_service_builds(sandbox):
    """The build Job goes with its service (owner reference, garbage collection; the kubelet
    then kills the build, and kiln-runtime never publishes a partial entry: see
    test_runtime_build). The shared LLMEngine stays, without a Job: the next service that
    wants it starts a new build instead of waiting on the old one."""
    sb = sandbox
    await sb.start_operator()
    await sb.create(copy.deepcopy(MISTRAL))
    [job] = await sb.wait_for(lambda: sb.objects("jobs"), what="the build Job")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "LLMService"

    await sb.api.delete(_service(sb))
    await sb.wait_for(lambda: not sb.objects("llmservices"), what="the service to be deleted")
    await sb.wait_for(lambda: not sb.objects("jobs"), what="the build Job to be collected")
    [engine] = sb.objects("llmengines")
    assert not is_true(_conditions(engine), "Ready")

    await sb.create(copy.deepcopy(MISTRAL))
    [again] = await sb.wait_for(lambda: sb.objects("jobs"), what="a new build Job")
    assert again["metadata"]["uid"] != job["metadata"]["uid"]
    sb.start_kubelet()
    await sb.wait_for(lambda: _ready(sb), what="Ready=True")
    assert is_true(_conditions(sb.objects("llmengines")[0]), "Ready")


async def test_a_service_waiting_for_its_build_is_polled_without_writing_to_it(sandbox):
    # A poll retried by kopf wrote the LLMService twice (its progress annotations, then a dummy
    # to wake its own watch): at a thousand services, most of the operator's writes.
    sb = sandbox
    await sb.start_operator()
    await sb.create(copy.deepcopy(MISTRAL))  # no kubelet: the build never finishes
    await sb.wait_for(lambda: (svc := _service(sb)) and "kiln.dev/last-handled-configuration"
                      in svc["metadata"].get("annotations", {})
                      and get_condition(_conditions(svc), "EngineReady"), what="the build's first status")
    reconciles, writes = _reconciles(sb), sb.changes("llmservices")
    await sb.wait_for(lambda: _reconciles(sb) >= reconciles + 3, what="three polls of the build")
    assert sb.changes("llmservices") == writes


async def test_a_serving_container_that_keeps_exiting_is_said_with_its_last_words(make_sandbox, backend):
    """A serving container that exits at start (a damaged cache entry, an engine that does not
    fit the GPU it got, a leader that refuses a tokenizer's own code) and restarts: the
    service is Reconciling with reason ServerFailing, naming the pod, the exit code and the
    last lines it printed as the kubelet keeps them (``terminationMessagePolicy:
    FallbackToLogsOnError``), instead of an unexplained "0/1 replicas ready". Once the server
    starts, the service is Ready and the message gone."""
    last_words = ("[kiln-runtime] reading the cache entry\nerror: engineDir: the cache entry /cache/ab is "
                  "damaged: engine/rank0.engine has another sha256; delete it (and its LLMEngine)")
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        sb.cluster.crashing["mistral-7b"] = last_words
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(copy.deepcopy(MISTRAL))

        def failing():
            svc = _service(sb)
            condition = svc and get_condition(_conditions(svc), "Reconciling")
            return condition if condition and condition.get("reason") == "ServerFailing" else None
        condition = await sb.wait_for(failing, timeout=30, what="Reconciling, ServerFailing")
        message = condition["message"]
        assert message.startswith("0/1 replicas ready; pod mistral-7b-server-"), message
        assert "(container server, exit code 2): [kiln-runtime] reading the cache entry / error: engineDir: " \
               "the cache entry /cache/ab is damaged" in message, message
        assert "restarted 3 times" in message and f"kubectl logs -n {sb.ns(NS)} " in message, message
        assert not _ready(sb)

        sb.cluster.crashing.clear()
        await sb.wait_for(lambda: _ready(sb), timeout=30, what="Ready once the server starts")
        assert "ServerFailing" not in str(_conditions(_service(sb)))
        assert sb.operator_error is None
