"""``decide(snapshot) -> Actions`` as a table: every state a service passes through, from a
snapshot built in memory (no API server, no emulator), and what the operator does about it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import yaml

from kiln.api import LLMServiceStatus
from kiln.api.llmservice import AutoscalerRecord
from kiln.autoscale import Decision, KVSample
from kiln.decide import Cluster, Observed, Snapshot, decide, decide_observed, intend, parse, workload_replicas
from kiln.decide.credentials import Credentials
from kiln.decide.decide import children, rolled_out
from kiln.decide.engine import cancelled_status
from kiln.decide.ownership import let_go
from kiln.decide.policy import Policy
from kiln.decide.snapshot import Superseded
from kiln.decide.status import get_condition, status_wire
from kiln.errors import SpecInvalid
from kiln.planner import model_config
from kiln.render import ServiceRef
from kiln.render.meta import ENGINE_KEY_ANNOTATION

from ..conftest import ROOT

NOW = "2026-01-01T00:00:00Z"
REF = ServiceRef("mistral-7b", "llm", "uid-1")
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())["spec"]
SERVES_ALL = frozenset({("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
                        ("inference.networking.k8s.io/v1", "InferencePool"),
                        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
                        ("http.keda.sh/v1alpha1", "HTTPScaledObject"),
                        ("keda.sh/v1alpha1", "ScaledObject")})


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(MISTRAL)
    spec.update(changes)
    return spec


@dataclass
class World:
    """The cluster around the service, as the snapshot reads it."""

    spec: dict[str, Any] = field(default_factory=_spec)
    status: dict[str, Any] = field(default_factory=dict)
    engine: str = "absent"  # absent | pending | ready | other-key | gated
    job: str = "absent"  # absent | running | complete | failed
    failure_recorded: bool = False
    workload: str = "absent"  # absent | rolling | ready | old-engine | foreign
    children: str = "ours"  # ours | foreign
    serves: frozenset[tuple[str, str]] = SERVES_ALL
    credentials: Credentials | SpecInvalid = Credentials(found=False)
    known_model: bool = True
    policy: Policy = Policy()
    observed: Observed = Observed()
    name: str = "mistral-7b"
    superseded: bool = False
    read_refusal: SpecInvalid | None = None


def _owned(obj: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    live = copy.deepcopy(obj)
    live["metadata"]["ownerReferences"] = [{"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                                            "name": REF.name, "uid": uid, "controller": True}]
    return live


def _condition(type_: str, ok: bool, reason: str = "Done") -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": "m",
            "lastTransitionTime": "2025-12-31T00:00:00Z"}


def _engine_record(rendered: Any, world: World) -> dict[str, Any] | None:
    if world.engine == "absent":
        return None
    record = copy.deepcopy(rendered.engine)
    if world.engine == "other-key":
        record["spec"]["key"] = "0" * 64
    if world.engine == "gated":
        record["spec"]["credentialsSecret"] = "hf-token"
    ready = world.engine in ("ready", "gated", "other-key")
    failed = world.failure_recorded
    record["status"] = {"conditions": [
        _condition("Ready", ready, "EngineBuildFailed" if failed else "EngineBuilt")]}
    if failed:
        record["status"]["conditions"][0]["message"] = "recorded failure"
    return record


def _job(rendered: Any, world: World) -> dict[str, Any] | None:
    if world.job == "absent":
        return None
    job = _owned(rendered.build_job)
    state = {"complete": "Complete", "failed": "Failed"}.get(world.job)
    job["status"] = {"startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:20:00Z",
                     "conditions": [_condition(state, True)] if state else []}
    return job


def _workload(rendered: Any, world: World) -> dict[str, Any] | None:
    if world.workload == "absent":
        return None
    live = _owned(rendered.workload, "someone-else" if world.workload == "foreign" else "uid-1")
    live["metadata"]["generation"] = 1
    ready = 1 if world.workload in ("ready", "old-engine") else 0
    live["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": ready}
    if world.workload == "old-engine":
        live["metadata"]["annotations"][ENGINE_KEY_ANNOTATION] = "an-older-key"
    return live


def snapshot(world: World) -> Snapshot:
    """What the operator would read in ``world`` (controller/gather.py, without the API)."""
    ref = replace(REF, name=world.name)
    status = LLMServiceStatus.model_validate(world.status)
    base = Snapshot(ref, 3, status, NOW, world.policy, observed=world.observed)
    try:
        parsed = parse(ref, world.spec, world.policy)
    except SpecInvalid as error:
        return replace(base, parsed=error)
    if isinstance(world.credentials, SpecInvalid):
        return replace(base, parsed=parsed, credentials=world.credentials)
    model, why = model_config(parsed.spec.model.source) if world.known_model else (None, "not in the catalog")
    decision = world.observed.decision
    replicas = workload_replicas(parsed.spec, decision.desired if decision else status.desired_replicas)
    base = replace(base, parsed=parsed, credentials=world.credentials, model=model, model_why=why)
    try:
        intent = intend(ref, parsed, model, replicas)
    except SpecInvalid as error:
        return replace(base, intent=error)
    base = replace(base, intent=intent)
    if intent.rendered is None or isinstance(intent.rendered, SpecInvalid):
        return base
    rendered = intent.rendered
    # What the cluster holds was rendered for the replicas before the decision.
    live = intend(ref, parsed, model, world.observed.current).rendered if decision else rendered
    lives = {(c["kind"], c["metadata"]["name"]): (_owned(c) if world.children == "ours" else _owned(c, "x"))
             for c in children(live) if world.workload != "absent"}
    lives[(rendered.workload["kind"], rendered.workload["metadata"]["name"])] = _workload(live, world)
    superseded = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "old-build", "namespace": "llm"}}
    return replace(base, cluster=Cluster(
        serves=world.serves, children=lives, engine=_engine_record(rendered, world), job=_job(rendered, world),
        build_failure=" at step build (container build, exit code 1): out of memory",
        superseded=Superseded(_owned(superseded), None, wanted=False) if world.superseded else None,
        read_refusal=world.read_refusal))


def _ready_status(**extra: Any) -> dict[str, Any]:
    """The status of a service that was Ready on the current engine."""
    world = World(engine="ready", workload="ready")
    return {**status_wire(decide(snapshot(world)).status), **extra}


def _condition_of(actions: Any, type_: str) -> tuple[str, str] | None:
    condition = get_condition(actions.status, type_)
    return (condition.status, condition.reason) if condition else None


ENGINE_KEYED = {"engine": {"name": "x", "key": "k", "storageUri": "pvc://llm/c/k", "buildJob": "x-build"}}
SCALING = {"mode": "builtin", "minReplicas": 1, "maxReplicas": 4}

# (what the service is going through, its world, Ready, Stalled reason or None, Event reasons,
#  kinds applied, requeue seconds)
ROWS: list[tuple[str, Any, tuple[str, str], str | None, list[str], list[str], float | None]] = [
    ("invalid spec", lambda: World(spec=_spec(gpus=0)),
     ("False", "SpecInvalid"), "SpecInvalid", ["SpecInvalid"], [], None),
    ("invalid name", lambda: World(name="Mistral_7B"),
     ("False", "SpecInvalid"), "SpecInvalid", ["SpecInvalid"], [], None),
    ("unknown GPU", lambda: World(spec=_spec(gpu={"type": "Z9000", "perNode": 8})),
     ("False", "SpecInvalid"), "SpecInvalid", ["SpecInvalid"], [], None),
    ("Prometheus refused by policy", lambda: World(
        spec=_spec(autoscaling={**SCALING, "metricsSource": "prometheus", "prometheusUrl": "http://evil:9090"}),
        policy=Policy(prometheus_urls=("http://prometheus:9090",))),
     ("False", "SpecInvalid"), "SpecInvalid", ["SpecInvalid"], [], None),
    ("credentials Secret missing", lambda: World(credentials=SpecInvalid(
        "spec.model.credentials.secretName: Secret llm/hf-token not found", reason="MissingDependency",
        retry_after=5.0)),
     ("False", "MissingDependency"), "MissingDependency", ["MissingDependency"], [], 5.0),
    ("GPUs the model cannot be split over", lambda: World(spec=_spec(gpus=6)),
     ("False", "SpecInvalid"), "SpecInvalid", ["SpecInvalid"], [], None),
    ("does not fit", lambda: World(spec=_spec(engine={"maxBatchSize": 2048, "maxSeqLen": 131072,
                                                      "maxInputLen": 4096})),
     ("False", "DoesNotFit"), "DoesNotFit", ["DoesNotFit"], [], None),
    ("new: the build starts", lambda: World(),
     ("False", "EngineBuilding"), None, [], [], 15.0),
    ("model config unknown: built anyway", lambda: World(known_model=False),
     ("False", "EngineBuilding"), None, [], [], 15.0),
    ("building", lambda: World(engine="pending", job="running"),
     ("False", "EngineBuilding"), None, [], [], 15.0),
    ("build succeeded: the children are applied", lambda: World(engine="pending", job="complete"),
     ("False", "RollingOut"), None, ["BuildSucceeded"],
     ["ServiceAccount", "Deployment", "Service"], 5.0),
    ("build failed", lambda: World(engine="pending", job="failed"),
     ("False", "EngineBuildFailed"), "EngineBuildFailed", ["BuildFailed", "EngineBuildFailed"], [], None),
    ("build failed, already reported", lambda: World(engine="pending", job="failed", failure_recorded=True),
     ("False", "EngineBuildFailed"), "EngineBuildFailed", ["EngineBuildFailed"], [], None),
    ("build failed with an old engine serving", lambda: World(engine="pending", job="failed",
                                                              workload="old-engine"),
     ("False", "EngineBuildFailed"), "EngineBuildFailed", ["BuildFailed", "EngineBuildFailed"], [], None),
    ("engine built by another service: reused", lambda: World(engine="ready"),
     ("False", "RollingOut"), None, ["EngineReused"], ["ServiceAccount", "Deployment", "Service"], 5.0),
    ("rolling out", lambda: World(engine="ready", workload="rolling", status=ENGINE_KEYED),
     ("False", "RollingOut"), None, ["EngineReused"], [], 5.0),
    ("ready", lambda: World(engine="ready", workload="ready", status=_ready_status()),
     ("True", "ReplicasReady"), None, [], [], None),
    ("a new engine builds while the old one serves", lambda: World(engine="pending", job="running",
                                                                   workload="old-engine"),
     ("False", "EngineBuilding"), None, [], [], 15.0),
    ("the spec moved on mid-build", lambda: World(superseded=True, status=ENGINE_KEYED),
     ("False", "EngineBuilding"), None, ["BuildCancelled"], [], 15.0),
    ("stalled on a conflict", lambda: World(engine="ready", workload="foreign"),
     ("False", "ResourceConflict"), "ResourceConflict", ["ResourceConflict"], [], None),
    ("stalled on a conflict, already reported", lambda: World(
        engine="ready", workload="foreign", status=decided_status(World(engine="ready", workload="foreign"))),
     ("False", "ResourceConflict"), "ResourceConflict", [], [], None),
    ("an engine record holding another key", lambda: World(engine="other-key"),
     ("False", "ResourceConflict"), "ResourceConflict", ["ResourceConflict"], [], None),
    ("a gated engine, no credentials", lambda: World(engine="gated"),
     ("False", "CredentialsRequired"), "CredentialsRequired", ["CredentialsRequired"], [], None),
    ("multi-node without LeaderWorkerSet", lambda: World(spec=_spec(gpus=16, parallelism={"tensor": 8, "pipeline": 2}),
                                                         serves=frozenset()),
     ("False", "MissingDependency"), "MissingDependency", ["MissingDependency"], [], None),
    ("gateway without its CRDs", lambda: World(spec=_spec(gateway={"name": "inference-gateway"}), serves=frozenset()),
     ("False", "MissingDependency"), "MissingDependency", ["MissingDependency"], [], None),
    ("the gateway's objects forbidden", lambda: World(spec=_spec(gateway={"name": "inference-gateway"}), read_refusal=SpecInvalid(
        "spec.gateway: the operator may not write the gateway's objects", reason="MissingDependency")),
     ("False", "MissingDependency"), "MissingDependency", ["MissingDependency"], [], None),
    ("scaled to zero", lambda: World(spec=_spec(replicas=0), engine="ready", workload="rolling",
                                     status=ENGINE_KEYED),
     ("True", "ScaledToZero"), None, ["EngineReused"], [], None),
    ("scaling up", lambda: World(spec=_spec(autoscaling=SCALING), engine="ready", workload="ready",
                                 status=_ready_status(), observed=Observed(
                                     decision=Decision(2, "KV 90% > 75%"), current=1)),
     ("True", "ReplicasReady"), None, ["ScaledUp"], ["Deployment"], None),
    ("metrics missing: the autoscaler holds", lambda: World(
        spec=_spec(autoscaling=SCALING), engine="ready", workload="ready", status=_ready_status(),
        observed=Observed(decision=Decision(1, "no fresh samples", held=True), current=1)),
     ("True", "ReplicasReady"), None, [], [], None),
    ("a scrape far from the plan", lambda: World(
        engine="ready", workload="ready", status=_ready_status(),
        observed=Observed(samples=(KVSample(100, 50, 32),))),
     ("True", "ReplicasReady"), None, ["PlanMismatch"], [], None),
]


def decided_status(world: World) -> dict[str, Any]:
    return status_wire(decide(snapshot(world)).status)


@pytest.mark.parametrize("row", ROWS, ids=[row[0] for row in ROWS])
def test_decide(row):
    _, world, ready, stalled, events, applied, requeue = row
    actions = decide(snapshot(world()))
    assert _condition_of(actions, "Ready") == ready
    assert _condition_of(actions, "Stalled") == (("True", stalled) if stalled else ("False", ready[1]))
    # A build's end is told (actions.finished) only by the service whose engine write lands,
    # its cancellation (actions.cancelled) only by the service whose delete does.
    assert sorted(reason for _, reason, _ in actions.events + actions.finished + actions.cancelled) == sorted(events)
    assert [obj["kind"] for obj in actions.apply] == applied
    assert (actions.requeue.delay if actions.requeue else None) == requeue
    assert actions.status.observed_generation == 3


def test_a_wait_leaves_no_reference_cycle_for_the_garbage_collector():
    # The requeue is kept as a value: with its traceback, it would hold decide's frames, and
    # with them the snapshot and every rendered child, in a cycle (the frames hold the actions
    # that hold it) that only a garbage collection frees, at a thousand services a pause.
    import gc
    world = World(engine="pending", job="running")
    gc.collect()
    gc.disable()
    try:
        actions = decide(snapshot(world))
        assert actions.requeue is not None and actions.requeue.__traceback__ is None
        del actions
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_new_service_creates_the_engine_record_and_its_build():
    actions = decide(snapshot(World()))
    assert actions.engine_record["kind"] == "LLMEngine" and actions.build_job["kind"] == "Job"
    assert [reason for _, reason, _ in actions.started] == ["BuildStarted"]
    assert actions.started_engine_status["conditions"][0]["reason"] == "EngineBuilding"
    assert _condition_of(actions, "EngineReady") == ("False", "EngineBuilding")


def test_the_openai_url_shows_once_its_service_exists():
    """`kubectl get -o wide` shows no URL whose name does not resolve yet."""
    assert decide(snapshot(World())).status.endpoints is None  # nothing applied yet
    ready = decide(snapshot(World(engine="ready", workload="ready")))
    assert ready.status.endpoints.openai == "http://mistral-7b-server.llm.svc:9000/v1"


def test_a_completed_build_is_recorded_on_the_engine_once():
    actions = decide(snapshot(World(engine="pending", job="complete")))
    assert actions.engine_status["storageUri"] == actions.status.engine.storage_uri
    assert actions.build_seconds == 1200.0 and actions.build_job is None


def test_a_failed_build_says_what_its_pods_said():
    actions = decide(snapshot(World(engine="pending", job="failed", workload="old-engine")))
    message = get_condition(actions.status, "Stalled").message
    assert "out of memory" in message and message.endswith("the previous engine keeps serving")


def test_a_ready_service_decides_nothing_new():
    """The resync of a settled service: nothing to apply, and the same status back."""
    status = _ready_status()
    actions = decide(snapshot(World(engine="ready", workload="ready", status=status)))
    assert status_wire(actions.status) == status and not actions.apply and not actions.events


def test_scaling_writes_the_decision_to_status_never_the_spec():
    world = World(spec=_spec(autoscaling=SCALING), engine="ready", workload="ready", status=_ready_status(),
                  observed=Observed(decision=Decision(3, "KV 95% > 75%"), current=1))
    actions = decide(snapshot(world))
    assert actions.status.desired_replicas == 3 and actions.status.autoscaling.last_scale_time == NOW
    [workload] = actions.apply
    assert workload["spec"]["replicas"] == 3
    assert _condition_of(actions, "ScalingActive") == ("True", "MetricsAvailable")
    # The rollout is concluded from the workload the API server returns from the apply.
    applied = copy.deepcopy(workload)
    applied["metadata"]["generation"], applied["status"] = 2, {"observedGeneration": 1, "readyReplicas": 1}
    rolled_out(actions, applied)
    assert _condition_of(actions, "Ready") == ("False", "RollingOut") and actions.requeue.delay == 5.0
    assert get_condition(actions.status, "Reconciling").message == "1/3 replicas ready"


def test_held_scaling_says_metrics_are_unavailable():
    world = World(spec=_spec(autoscaling=SCALING), engine="ready", workload="ready", status=_ready_status(),
                  observed=Observed(decision=Decision(1, "no fresh samples", held=True), current=1))
    assert _condition_of(decide(snapshot(world)), "ScalingActive") == ("False", "MetricsUnavailable")


def test_ready_is_true_exactly_when_neither_stalled_nor_reconciling():
    for row in ROWS:
        actions = decide(snapshot(row[1]()))
        abnormal = {t for t in ("Stalled", "Reconciling") if get_condition(actions.status, t).status == "True"}
        assert (get_condition(actions.status, "Ready").status == "True") == (not abnormal), row[0]


def _settled(spec: dict[str, Any], observed: Observed) -> World:
    """A service Ready on the current engine, and what a timer has just observed of it."""
    status = status_wire(decide(snapshot(World(spec=spec, engine="ready", workload="ready"))).status)
    return World(spec=spec, engine="ready", workload="ready", status=status, observed=observed)


RECORD = AutoscalerRecord(saved_at="2026-01-01T00:00:00Z", started_at="2025-12-31T23:40:00Z",
                          demand="1200:1.2 15:1.5 0:1.4")

# What a timer observes of a settled service that leaves its replicas as they are: recorded in
# its status without a reconcile (controller/reconcile.py, ``record``).
SETTLED = [
    ("a scrape", lambda: _settled(_spec(), Observed(samples=(KVSample(12664, 6332, 32),)))),
    ("a scrape far from the plan", lambda: _settled(_spec(), Observed(samples=(KVSample(100, 50, 32),)))),
    ("the autoscaler keeps the replicas", lambda: _settled(_spec(autoscaling=SCALING), Observed(
        samples=(KVSample(12664, 6332, 32),), decision=Decision(1, "KV 50% < 75%"), current=1))),
    ("the autoscaler holds without metrics", lambda: _settled(_spec(autoscaling=SCALING), Observed(
        decision=Decision(1, "no fresh samples", held=True), current=1))),
    ("the autoscaler hands out its record", lambda: _settled(_spec(autoscaling=SCALING), Observed(
        decision=Decision(1, "KV 50% < 75%"), current=1, record=RECORD))),
]


@pytest.mark.parametrize("row", SETTLED, ids=[row[0] for row in SETTLED])
def test_an_observation_recorded_without_a_reconcile_is_what_a_reconcile_would_write(row):
    world = row[1]()
    recorded = decide_observed(LLMServiceStatus.model_validate(world.status), world.observed, NOW, 3)
    reconciled = decide(snapshot(world))
    assert not reconciled.apply and reconciled.requeue is None  # nothing but the status to do
    assert recorded is not None and not recorded.apply
    assert status_wire(recorded.status) == status_wire(reconciled.status)
    assert recorded.events == reconciled.events


def test_the_laws_record_stays_in_the_status_until_the_next_one():
    world = SETTLED[-1][1]()
    first = decide_observed(LLMServiceStatus.model_validate(world.status), world.observed, NOW, 3)
    assert first is not None and first.status.autoscaling.record == RECORD
    for reason, desired in (("KV 50% < 75%", 1), ("KV 20% < 75%", 1), ("KV 95% > 75%", 2)):
        later = decide_observed(first.status, Observed(decision=Decision(desired, reason), current=1),
                                "2026-01-01T00:01:00Z", 3)
        assert later is None or later.status.autoscaling.record == RECORD, reason
    newer = RECORD.model_copy(update={"demand": "60:2.5 0:2.5"})
    later = decide_observed(first.status, Observed(decision=Decision(1, "KV 50% < 75%"), current=1,
                                                   record=newer), "2026-01-01T00:01:00Z", 3)
    assert later is not None and later.status.autoscaling.record == newer


def test_an_observation_already_in_the_status_is_not_written_again():
    world = SETTLED[0][1]()
    once = decide_observed(LLMServiceStatus.model_validate(world.status), world.observed, NOW, 3)
    assert once is not None
    assert decide_observed(once.status, world.observed, "2026-01-01T00:01:00Z", 3) is None


def test_a_conflict_says_what_removes_it():
    """An object named after the service: another name for the service, or its removal. One
    named after the engine (the build Job, the LLMEngine): only its removal; renaming the
    service names the engine the same."""
    from kiln.decide.ownership import check_controlled, check_engine_job

    desired = {"kind": "Deployment", "metadata": {"name": "svc-server", "namespace": "llm"}}
    with pytest.raises(SpecInvalid) as by_service:
        check_controlled({"metadata": {"name": "svc-server"}}, desired, "uid-1", "llm/svc")
    assert by_service.value.message.endswith("Give LLMService llm/svc another name, or remove that Deployment")
    job = {"kind": "Job", "metadata": {"name": "eng-build", "namespace": "llm", "labels": {"kiln.dev/engine": "eng"}}}
    with pytest.raises(SpecInvalid) as by_engine:
        check_engine_job({"metadata": {"name": "eng-build"}}, job, "llm/svc")
    assert "Remove that Job (its name is the engine's" in by_engine.value.message
    assert "LLMService llm/svc another name" not in by_engine.value.message


def _other_owner(job: dict[str, Any], name: str = "other", uid: str = "uid-2") -> dict[str, Any]:
    job = copy.deepcopy(job)
    job["metadata"]["ownerReferences"].append({"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                                               "name": name, "uid": uid, "controller": False})
    return job


def _superseded(world: World, job: dict[str, Any], wanted: bool = False, engine: Any = None) -> Any:
    base = snapshot(world)
    return replace(base, cluster=replace(base.cluster, superseded=Superseded(job, engine, wanted)))


OLD_JOB = _owned({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "old-build", "namespace": "llm",
                                                                        "uid": "job-uid"}})
BUILDING = {"metadata": {"name": "old", "resourceVersion": "7"},
            "status": {"buildJob": "old-build", "conditions": [_condition("Ready", False, "EngineBuilding")]}}


def test_a_service_waiting_on_a_build_another_started_joins_its_owners():
    """Deleting the service that started a shared build deleted the Job (it was its only
    owner) and the others built again from zero."""
    world = World(engine="pending", job="running")
    base = snapshot(world)
    started_by_other = _owned(base.cluster.job, "uid-9")
    started_by_other["metadata"]["uid"] = "job-uid"
    actions = decide(replace(base, cluster=replace(base.cluster, job=started_by_other)))
    [(job, operations)] = actions.job_owners
    assert job is started_by_other
    assert operations[0] == {"op": "test", "path": "/metadata/uid", "value": "job-uid"}
    assert operations[1]["op"] == "add" and operations[1]["path"] == "/metadata/ownerReferences/-"
    assert operations[1]["value"] == {"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                                      "name": REF.name, "uid": "uid-1", "controller": False}
    # Already an owner, or a finished build: nothing to join.
    assert decide(base).job_owners == []
    done = World(engine="pending", job="complete")
    assert decide(snapshot(done)).job_owners == []


def test_a_build_job_with_an_owner_that_is_not_a_service_is_a_conflict():
    world = World(engine="pending", job="running")
    base = snapshot(world)
    job = copy.deepcopy(base.cluster.job)
    job["metadata"]["ownerReferences"].append({"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "u"})
    actions = decide(replace(base, cluster=replace(base.cluster, job=job)))
    assert _condition_of(actions, "Stalled") == ("True", "ResourceConflict")
    assert "is not owned by LLMServices alone" in get_condition(actions.status, "Stalled").message


def test_a_superseded_build_another_service_owns_keeps_running_and_the_service_leaves_its_owners():
    world = World(superseded=True, status=ENGINE_KEYED)
    shared = _other_owner(OLD_JOB)
    actions = decide(_superseded(world, shared))
    assert actions.let_go == (shared, "uid-1", False) and actions.job_owners == []
    assert let_go(shared, "uid-1", False) == (
        "leave", [{"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": "uid-1"},
                  {"op": "remove", "path": "/metadata/ownerReferences/0"}])
    # Read again after another owner left first: the index is the new one.
    moved = copy.deepcopy(shared)
    moved["metadata"]["ownerReferences"].reverse()
    assert let_go(moved, "uid-1", False)[1][0]["path"] == "/metadata/ownerReferences/1/uid"
    # ... and once this service is the only owner left, it deletes the build.
    assert let_go(OLD_JOB, "uid-1", False) == ("delete", None)


def test_a_superseded_build_another_service_names_keeps_running_and_its_owner():
    """The other service has not joined yet: leaving would leave the Job no owner."""
    world = World(superseded=True, status=ENGINE_KEYED)
    actions = decide(_superseded(world, OLD_JOB, wanted=True))
    assert actions.let_go is None and actions.job_owners == []


def test_a_superseded_job_the_service_does_not_own_is_never_touched():
    """A tenant's Job named like the build Job (the service stalled on it as a conflict) was
    deleted as the service's own superseded build once its spec moved on."""
    world = World(superseded=True, status=ENGINE_KEYED)
    for job in (_owned(OLD_JOB, "someone-else"), {**OLD_JOB, "metadata": {**OLD_JOB["metadata"], "ownerReferences": []}}):
        actions = decide(_superseded(world, job))
        assert actions.let_go is None and actions.cancelled == [] and actions.job_owners == []


def test_a_superseded_build_nobody_else_wants_is_cancelled_and_its_engine_told():
    world = World(superseded=True, status=ENGINE_KEYED)
    actions = decide(_superseded(world, OLD_JOB, engine=BUILDING))
    assert actions.let_go == (OLD_JOB, "uid-1", False) and let_go(OLD_JOB, "uid-1", False) == ("delete", None)
    assert [reason for _, reason, _ in actions.cancelled] == ["BuildCancelled"]
    record, status = actions.cancelled_engine
    assert record is BUILDING and status["buildJob"] is None
    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "EngineBuildCancelled")
    assert f"LLMService llm/{REF.name} moved to engine" in ready["message"]


def test_only_a_record_that_says_it_builds_is_told_its_build_stopped():
    assert cancelled_status(BUILDING, "why", NOW) is not None
    for reason, ok in (("EngineBuilt", True), ("EngineBuildFailed", False), ("EngineBuildCancelled", False)):
        record = {"status": {"conditions": [_condition("Ready", ok, reason)]}}
        assert cancelled_status(record, "why", NOW) is None
    assert cancelled_status(None, "why", NOW) is None


REFUSED = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
           "message": 'pods "mistral-7b-server-5d9c-x2" is forbidden: exceeded quota: team-pods, requested: pods=1, '
                      'used: pods=1, limited: pods=1'}


@pytest.mark.parametrize("workload, ready", [("rolling", ("False", "PodsRefused")),
                                             ("ready", ("True", "ReplicasReady"))])
def test_a_serving_pod_the_namespace_refuses_is_said_with_the_api_servers_reason(workload, ready):
    """The ReplicaSet controller's refusal, copied to the Deployment's ReplicaFailure
    condition: before, the service said RollingOut (or "1/1 replicas ready") and nothing of
    why no pod came."""
    status = _ready_status() if workload == "ready" else ENGINE_KEYED
    base = snapshot(World(engine="ready", workload=workload, status=status))
    key = next(k for k in base.cluster.children if k[0] == "Deployment")
    live = copy.deepcopy(base.cluster.children[key])
    live["status"]["conditions"] = [REFUSED]
    actions = decide(replace(base, cluster=replace(base.cluster, children={**base.cluster.children, key: live})))
    assert _condition_of(actions, "Ready") == ready
    message = get_condition(actions.status, "Ready").message
    assert "a serving pod cannot be created: pods \"mistral-7b-server-5d9c-x2\" is forbidden: exceeded quota: " \
           "team-pods" in message and "namespace llm" in message and "spec.replicas" in message, message
    assert actions.requeue is not None


BUILD_REFUSED = ('Error creating: pods "x-build-abc" is forbidden: exceeded quota: team-gpus, requested: '
                 'requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=0, limited: requests.nvidia.com/gpu=0')
GROUP_REFUSED = ('create Pod g-0 in StatefulSet g failed error: pods "g-0" is forbidden: violates PodSecurity '
                 '"restricted:latest": unrestricted capabilities (container "server" must not include "IPC_LOCK" ...)')


@pytest.mark.parametrize("world, field, said", [
    # A build Job's pod: the Job controller's Event, read by the gather.
    (lambda: World(engine="pending", job="running"), "build_refused",
     f"its build pod cannot be created: {BUILD_REFUSED} (a ResourceQuota"),
    # A multi-node group's: its StatefulSets' Events; a Pod Security refusal is told the label.
    (lambda: World(spec=_spec(gpus=16, parallelism={"tensor": 8, "pipeline": 2}), engine="ready",
                   workload="rolling", status=ENGINE_KEYED), "refused",
     f"a serving pod cannot be created: {GROUP_REFUSED} (the Pod Security level namespace llm enforces refuses "
     "it: label the namespace pod-security.kubernetes.io/enforce"),
])
def test_a_pod_the_namespace_refuses_is_said_with_the_api_servers_reason(world, field, said):
    base = snapshot(world())
    why = BUILD_REFUSED if field == "build_refused" else GROUP_REFUSED
    actions = decide(replace(base, cluster=replace(base.cluster, **{field: why})))
    assert _condition_of(actions, "Ready") == ("False", "PodsRefused")
    message = get_condition(actions.status, "Ready").message
    assert said in message and "namespace llm" in message, message
    assert actions.requeue is not None


def test_a_replica_failure_message_is_kept_to_one_printable_line():
    base = snapshot(World(engine="ready", workload="rolling", status=ENGINE_KEYED))
    key = next(k for k in base.cluster.children if k[0] == "Deployment")
    live = copy.deepcopy(base.cluster.children[key])
    live["status"]["conditions"] = [{**REFUSED, "message": "line1\nline2 \x1b[31mred\x00\u202e" + "B" * 5000}]
    actions = decide(replace(base, cluster=replace(base.cluster, children={**base.cluster.children, key: live})))
    message = get_condition(actions.status, "Ready").message
    assert "line1 line2 [31mred" in message and all(ch.isprintable() for ch in message)
    assert message.count("B") <= 400
