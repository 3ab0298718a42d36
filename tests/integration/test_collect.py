"""Edits mid-build cost no GPU hours and leave no records behind.

Before, ten edits while a build ran made ten build Jobs (up to 6 h of GPU time each) and
ten LLMEngine records, none ever deleted. Now a build Job that no service wants any more is
deleted at once, and an LLMEngine no service references is deleted after a grace period.
"""

from __future__ import annotations

import asyncio
import copy

import yaml

from kiln.decide.conditions import is_true
from kiln.decide.policy import Policy
from kiln.demo.sandbox import Sandbox
from kiln.toolchain import RUNTIME_IMAGE

from ..conftest import ROOT

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
# Sweeps every half second; a record goes after 2 s unreferenced (a day by default).
FAST_COLLECTION = {"resync_period": 0.5, "engine_sweep_period": 0.5, "engine_grace": 2.0}


def _named(name):
    manifest = copy.deepcopy(MISTRAL)
    manifest["metadata"] = {"name": name, "namespace": NS}
    return manifest


def _engine_name(sb, name):
    return ((sb.get("llmservices", name, NS) or {}).get("status") or {}).get("engine", {}).get("name")


def _builds(sb):
    """The names of the Jobs that BuildStarted and BuildCancelled Events name. By name: kopf
    posts an Event at least once (it repeats a request that timed out, which may have been
    stored), so the same Event can be there twice."""
    events = sb.objects("events")
    return ({e["message"].rsplit(" ", 1)[1] for e in events if e.get("reason") == "BuildStarted"},
            {e["message"].split()[3].rstrip(":") for e in events if e.get("reason") == "BuildCancelled"})


async def test_edits_mid_build_leave_one_build_and_one_engine(make_sandbox, backend):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                       timings=FAST_COLLECTION) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()  # no kubelet yet: every build stays running
        await sb.create(_named("edited"))
        await sb.wait_for(lambda: sb.objects("jobs") and _engine_name(sb, "edited"), what="the first build")
        for batch in (32, 48, 96, 128, 160):
            before = _engine_name(sb, "edited")
            await sb.patch_spec(NS, "edited", {"engine": {"maxBatchSize": batch}})
            await sb.wait_for(lambda: _engine_name(sb, "edited") not in (None, before),
                              what=f"the service on the engine for maxBatchSize {batch}")
        current = _engine_name(sb, "edited")
        await sb.wait_for(lambda: [j["metadata"]["name"] for j in sb.objects("jobs")] == [current + "-build"],
                          what="only the current build Job left")
        # Counted from the Events: a real server keeps no history of the Jobs it deleted. kopf
        # posts Events from a queue, after the writes they tell of: wait until all have arrived.
        def all_posted():
            started, cancelled = _builds(sb)
            return (started, cancelled) if len(started) >= 6 and len(cancelled) >= 5 else None
        started, cancelled = await sb.wait_for(all_posted, what="six BuildStarted and five BuildCancelled Events")
        assert len(started) == 6 and len(cancelled) == 5 and current + "-build" not in cancelled
        assert cancelled == started - {current + "-build"}
        if backend == "emulator":  # where the watch history holds every Job ever added
            added = {o["metadata"]["name"] for t, o in sb.events("jobs") if t == "ADDED"}
            assert cancelled == added - {current + "-build"}
        await sb.wait_for(lambda: [e["metadata"]["name"] for e in sb.objects("llmengines")] == [current],
                          timeout=20, what="the superseded LLMEngines collected")
        sb.start_kubelet()
        await sb.wait_for(lambda: is_true(sb.get("llmservices", "edited", NS)["status"]["conditions"], "Ready"),
                          timeout=30, what="Ready on the last edit")
        assert [len(events) for events in _builds(sb)] == [6, 5]  # finishing started no other build
        assert sb.operator_error is None


async def test_a_build_another_service_wants_keeps_running_and_its_engine_stays(make_sandbox):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                       timings=FAST_COLLECTION) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        await sb.create(_named("a"))
        await sb.create(_named("b"))
        await sb.wait_for(lambda: _engine_name(sb, "a") and _engine_name(sb, "b"), what="both on one engine")
        shared = _engine_name(sb, "a")
        [job] = sb.objects("jobs")
        await sb.patch_spec(NS, "a", {"engine": {"maxBatchSize": 32}})
        await sb.wait_for(lambda: len(sb.objects("jobs")) == 2, what="a's new build")
        assert sb.get("jobs", job["metadata"]["name"], NS)["metadata"]["uid"] == job["metadata"]["uid"]
        assert not any(e.get("reason") == "BuildCancelled" for e in sb.objects("events"))
        await sb.wait_for(lambda: len(sb.objects("llmengines")) == 2, what="two engines")
        await asyncio.sleep(3.0)  # past the grace period: b still references the shared engine
        assert shared in [e["metadata"]["name"] for e in sb.objects("llmengines")]
        assert sb.operator_error is None


def _owners(job):
    return sorted(ref["name"] for ref in job["metadata"].get("ownerReferences") or [])


def _ready_reason(engine):
    return next((c.get("reason") for c in ((engine or {}).get("status") or {}).get("conditions") or []
                 if c.get("type") == "Ready"), None)


async def test_a_shared_build_outlives_the_service_that_started_it(make_sandbox, backend):
    """The build Job of an engine two services wanted was the starting service's alone:
    deleting that service mid-build had the garbage collector delete the Job, and the other
    service started the build again from zero. Every service that waits on a build is one of
    its Job's owners now, and the collector deletes a Job only once none of them is left."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            timings=FAST_COLLECTION) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()  # no kubelet yet: the build stays running
        await sb.create(_named("a"))
        await sb.wait_for(lambda: sb.objects("jobs"), what="a's build")
        await sb.create(_named("b"))
        await sb.wait_for(lambda: _owners(sb.objects("jobs")[0]) == ["a", "b"], what="b one of the Job's owners")
        [job] = sb.objects("jobs")
        await sb.api.delete(sb.get("llmservices", "a", NS))

        def collected():
            jobs = sb.objects("jobs")
            return (jobs[0]["metadata"]["uid"], _owners(jobs[0])) if jobs and _owners(jobs[0]) == ["b"] else \
                ("gone", []) if not jobs else None
        assert await sb.wait_for(collected, timeout=60, what="the collector done with a") == \
            (job["metadata"]["uid"], ["b"])
        sb.start_kubelet()
        await sb.wait_for(lambda: is_true(sb.get("llmservices", "b", NS)["status"]["conditions"], "Ready"),
                          timeout=30, what="b Ready on the build a started")
        # kopf posts Events from a queue, after the writes they tell of: wait for the
        # BuildStarted Event before counting the builds it names.
        started = await sb.wait_for(lambda: _builds(sb)[0], what="the BuildStarted Event")
        assert started == {job["metadata"]["name"]}  # one build, never started again
        assert sb.operator_error is None


async def test_a_build_stopped_with_the_last_service_that_wanted_it_is_said_so_on_its_engine(make_sandbox, backend):
    """The LLMEngine of a build whose last service was deleted mid-build said
    EngineBuilding, naming a Job that was gone, until the record was collected a day later."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()  # no kubelet: the build stays running
        await sb.create(_named("a"))
        await sb.wait_for(lambda: sb.objects("jobs") and _engine_name(sb, "a"), what="a's build")
        engine = _engine_name(sb, "a")
        await sb.api.delete(sb.get("llmservices", "a", NS))
        await sb.wait_for(lambda: not sb.objects("jobs"), timeout=60, what="the build Job collected")
        await sb.wait_for(lambda: _ready_reason(sb.get("llmengines", engine)) == "EngineBuildCancelled",
                          what="the engine's record saying its build stopped")
        message = next(c["message"] for c in sb.get("llmengines", engine)["status"]["conditions"])
        assert f"LLMService {sb.ns(NS)}/a" in message and "starts its build again" in message
        assert sb.operator_error is None


async def test_a_build_cancelled_by_an_edit_is_said_so_on_its_engine(make_sandbox, backend):
    """The same when the service moved to another engine mid-build and its build Job was
    deleted: the superseded engine's record said EngineBuilding until it was collected."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        await sb.create(_named("moved"))
        await sb.wait_for(lambda: sb.objects("jobs") and _engine_name(sb, "moved"), what="the first build")
        first = _engine_name(sb, "moved")
        await sb.patch_spec(NS, "moved", {"engine": {"maxBatchSize": 32}})
        await sb.wait_for(lambda: _ready_reason(sb.get("llmengines", first)) == "EngineBuildCancelled",
                          what="the first engine's record saying its build was cancelled")
        assert first + "-build" not in [j["metadata"]["name"] for j in sb.objects("jobs")]
        assert sb.operator_error is None


async def _sharing(sb, names):
    """The operator without a kubelet (builds run on), ``names`` created on one engine and all
    owners of its build Job; the Job."""
    sb.add_namespace(NS)
    await sb.start_operator()
    for name in names:
        await sb.create(_named(name))
    await sb.wait_for(lambda: sb.objects("jobs") and _owners(sb.objects("jobs")[0]) == sorted(names),
                      what=f"{names} all owners of the build Job")
    return sb.objects("jobs")[0]


async def test_services_that_move_on_together_leave_a_shared_build_to_the_one_left(make_sandbox, backend):
    """Two of three services moved to another engine at once: each left the Job's owners by
    the index it had read, the second's patch was refused as the first's had shifted the list,
    and it stayed an owner for good, so the build ran on once the third was deleted (a
    reviewer's case, 2 of 2 on the real control plane)."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        job = await _sharing(sb, ["a", "b", "c"])
        shared = _engine_name(sb, "c")
        await asyncio.gather(sb.patch_spec(NS, "a", {"engine": {"maxBatchSize": 32}}),
                             sb.patch_spec(NS, "b", {"engine": {"maxBatchSize": 32}}))
        await sb.wait_for(lambda: _owners(sb.get("jobs", job["metadata"]["name"], NS) or {"metadata": {}}) == ["c"],
                          what="a and b no longer owners of the build c waits on")
        await sb.api.delete(sb.get("llmservices", "c", NS))
        await sb.wait_for(lambda: sb.get("jobs", job["metadata"]["name"], NS) is None, timeout=60,
                          what="the build nobody wants collected with c")
        await sb.wait_for(lambda: _ready_reason(sb.get("llmengines", shared)) == "EngineBuildCancelled",
                          what="its engine saying so")
        assert sb.operator_error is None


async def _squatted_build(sb):
    """A tenant's running Job under the name of the build Job of ``_named("t")``'s engine, and
    service ``t`` stalled on the conflict: the probe's build Job (that engine's, as read
    before its service was deleted) and the tenant's."""
    await sb.create(_named("probe"))
    await sb.wait_for(lambda: sb.objects("jobs"), what="a build, to learn its name")
    [probe] = sb.objects("jobs")
    await sb.api.delete(sb.get("llmservices", "probe", NS))
    # Not left to the garbage collector: a fresh control plane's may not know LLMServices yet
    # and retries an owner it cannot resolve with a doubling back-off (41 s, then 82 s).
    await sb.api.delete({**probe, "apiVersion": "batch/v1", "kind": "Job"}, background=True)
    await sb.wait_for(lambda: not sb.objects("jobs") and not sb.objects("llmservices"), timeout=60,
                      what="the probe and its build gone")
    await sb.create({"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": {"name": probe["metadata"]["name"], "namespace": NS},
                     "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                         {"name": "x", "image": "busybox", "command": ["sleep", "3600"]}]}}}})
    tenant = sb.get("jobs", probe["metadata"]["name"], NS)
    await sb.create(_named("t"))
    await sb.wait_for(lambda: "not owned by LLMServices alone" in _stalled(sb, "t"), what="t in conflict")
    return probe, tenant


async def test_a_service_never_deletes_a_build_job_it_does_not_own(make_sandbox, backend):
    """A tenant's Job named like a build Job: the service stalled on the conflict, and when its
    spec moved to another engine it deleted that Job as its own superseded build."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        probe, tenant = await _squatted_build(sb)
        name = probe["metadata"]["name"]
        await sb.patch_spec(NS, "t", {"engine": {"maxBatchSize": 32}})
        await sb.wait_for(lambda: _engine_name(sb, "t") not in (None, probe["metadata"]["labels"].get("kiln.dev/engine")) and
                          len(sb.objects("jobs")) == 2, what="t on its new engine, building it")
        assert (sb.get("jobs", name, NS) or {}).get("metadata", {}).get("uid") == tenant["metadata"]["uid"]
        assert not any(e.get("reason") == "BuildCancelled" for e in sb.objects("events"))
        assert sb.operator_error is None


async def test_the_sweep_never_deletes_a_build_job_it_does_not_own_with_its_engine(make_sandbox, backend):
    """A tenant's running Job named like an engine's build Job: a service that wanted the
    engine wrote its record and stalled on the conflict, and when the record was collected a
    grace period after the service moved to another engine, the sweep deleted that Job as the
    engine's running build."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            timings=FAST_COLLECTION) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()  # no kubelet: the tenant's Job stays running
        probe, tenant = await _squatted_build(sb)
        name = probe["metadata"]["name"]
        engine = _engine_name(sb, "t")
        assert sb.get("llmengines", engine) is not None
        await sb.patch_spec(NS, "t", {"engine": {"maxBatchSize": 32}})  # its resyncs sweep the namespace
        await sb.wait_for(lambda: sb.get("llmengines", engine) is None, timeout=20,
                          what="the engine's record collected")
        await asyncio.sleep(1.5)  # more sweeps
        assert (sb.get("jobs", name, NS) or {}).get("metadata", {}).get("uid") == tenant["metadata"]["uid"]
        assert sb.operator_error is None


async def test_the_sweep_deletes_a_build_whose_owners_all_moved_on(make_sandbox, backend):
    """The net under a leave that never landed: an owner whose status names another engine
    keeps the build alive for nobody; the namespace's sweep deletes it, and its engine says
    so, before the record's grace is over."""
    # The record's grace 20 s: the sweep deletes such a build once the engine has been
    # unreferenced for half of it, and the record itself is still there then.
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            timings={"resync_period": 0.5, "engine_sweep_period": 0.5, "engine_grace": 20.0}) as sb:
        job = await _sharing(sb, ["a", "b"])
        shared = _engine_name(sb, "a")
        b = sb.get("llmservices", "b", NS)
        await sb.patch_spec(NS, "b", {"engine": {"maxBatchSize": 32}})
        await sb.wait_for(lambda: _owners(sb.get("jobs", job["metadata"]["name"], NS) or {"metadata": {}}) == ["a"],
                          what="b left the build's owners")
        # As if b's leave had never landed: its reference put back by hand.
        await sb.api.json_patch(sb.get("jobs", job["metadata"]["name"], NS), [{
            "op": "add", "path": "/metadata/ownerReferences/-", "value": {
                "apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService", "name": "b",
                "uid": b["metadata"]["uid"], "controller": False}}])
        await sb.api.delete(sb.get("llmservices", "a", NS))
        await sb.wait_for(lambda: sb.get("jobs", job["metadata"]["name"], NS) is None, timeout=60,
                          what="the build nobody waits on deleted by the sweep")
        await sb.wait_for(lambda: _ready_reason(sb.get("llmengines", shared)) == "EngineBuildCancelled",
                          what="its engine saying so")
        assert sb.get("llmengines", shared) is not None  # the record itself keeps its day of grace
        assert sb.operator_error is None


async def _victim_building(sb):
    """Service ``v`` of namespace ``victim`` building its engine (no kubelet: builds stay
    running), with the operator started and namespace ``NS`` made; the status's engine."""
    sb.add_namespace(NS)
    sb.add_namespace("victim")
    await sb.start_operator()
    victim = _named("v")
    victim["metadata"]["namespace"] = "victim"
    await sb.create(victim)
    await sb.wait_for(lambda: ((sb.get("llmservices", "v", "victim") or {}).get("status") or {}).get("engine"),
                      what="the victim's engine")
    engine = sb.get("llmservices", "v", "victim")["status"]["engine"]
    await sb.wait_for(lambda: _ready_reason(sb.get("llmengines", engine["name"])) == "EngineBuilding",
                      what="the victim's engine building")
    return engine


async def test_a_deleted_service_s_status_never_tells_another_namespace_s_engine_its_build_stopped(
        make_sandbox, backend):
    """A tenant who may write their service's status named another namespace's engine in it,
    building, and deleted the service: the operator wrote EngineBuildCancelled onto that
    cluster-scoped record, whose build ran on."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        engine = await _victim_building(sb)
        tenant = _named("t")
        tenant["spec"]["model"]["credentials"] = {"secretName": "hf-token"}  # absent: t stalls, its status kept
        await sb.create(tenant)
        await sb.wait_for(lambda: _stalled(sb, "t"), what="t stalled")
        await sb.api.patch_status(sb.get("llmservices", "t", NS), {"engine": engine})
        assert sb.get("llmservices", "t", NS)["status"]["engine"]["name"] == engine["name"]
        await sb.api.delete(sb.get("llmservices", "t", NS))
        await sb.wait_for(lambda: not sb.get("llmservices", "t", NS), what="t deleted")
        await asyncio.sleep(1.0)  # the deletion's handler has run
        assert _ready_reason(sb.get("llmengines", engine["name"])) == "EngineBuilding"
        assert sb.operator_error is None


async def test_a_forged_engine_in_a_status_never_has_another_namespace_s_engine_told_its_build_stopped(
        make_sandbox, backend):
    """The same forgery on the path of a service that moves to another engine: a tenant who
    may write their service's status names another namespace's building engine in it, with a
    running Job of their own service under that engine's build name, and edits the spec. The
    service lets its Job go (its own); the other namespace's record is not told anything."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        engine = await _victim_building(sb)
        await sb.create(_named("t"))
        await sb.wait_for(lambda: _engine_name(sb, "t"), what="t's own engine")
        tenant = sb.get("llmservices", "t", NS)
        await sb.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": engine["name"] + "-build", "namespace": NS, "ownerReferences": [{
                "apiVersion": tenant["apiVersion"], "kind": "LLMService", "name": "t",
                "uid": tenant["metadata"]["uid"]}]},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "x", "image": "busybox", "command": ["sleep", "3600"]}]}}}})
        await sb.api.patch_status(tenant, {"engine": engine})
        await sb.patch_spec(NS, "t", {"engine": {"maxBatchSize": 32}})
        await sb.wait_for(lambda: _engine_name(sb, "t") not in (None, engine["name"]), what="t on its new engine")
        await asyncio.sleep(1.0)
        assert _ready_reason(sb.get("llmengines", engine["name"])) == "EngineBuilding"
        assert sb.operator_error is None


def _stalled(sb, name):
    conditions = ((sb.get("llmservices", name, NS) or {}).get("status") or {}).get("conditions") or []
    return next((str(c.get("message")) for c in conditions if c.get("type") == "Stalled" and c.get("status") == "True"), "")


def _purge_jobs(sb):
    return [j for j in sb.objects("jobs")
            if j["metadata"]["labels"].get("app.kubernetes.io/component") == "engine-cache-purge"]


async def _superseded_engine_collected(sb):
    """One service moved to another engine; the first engine's record collected. Its record
    (as it was) and the current engine's name."""
    sb.add_namespace(NS)
    await sb.start_operator()
    await sb.create(_named("moved"))
    await sb.wait_for(lambda: _engine_name(sb, "moved"), what="the first engine")
    first = copy.deepcopy(sb.get("llmengines", _engine_name(sb, "moved")))
    await sb.patch_spec(NS, "moved", {"engine": {"maxBatchSize": 32}})
    await sb.wait_for(lambda: _engine_name(sb, "moved") not in (None, first["metadata"]["name"]),
                      what="the service on its second engine")
    current = _engine_name(sb, "moved")
    await sb.wait_for(lambda: [e["metadata"]["name"] for e in sb.objects("llmengines")] == [current],
                      timeout=20, what="the first LLMEngine collected")
    return first, current


async def test_with_the_opt_in_the_sweep_starts_one_purge_job_for_the_collected_engine_only():
    async with Sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                       timings=FAST_COLLECTION,
                       policy=Policy(delete_unreferenced_engine_files=True)) as sb:
        first, current = await _superseded_engine_collected(sb)
        await asyncio.sleep(1.5)  # more sweeps: still one Job, and none for the current engine
        [job] = _purge_jobs(sb)
        name, key = first["metadata"]["name"], first["spec"]["key"]
        assert job["metadata"]["name"] == name + "-purge" and job["metadata"]["namespace"] == NS
        assert job["metadata"]["labels"]["kiln.dev/engine"] == name
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["command"] == ["kiln-runtime", "delete-entry", "--cache-root", "/engines",
                                        "--key", key]
        assert container["image"] == RUNTIME_IMAGE
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["automountServiceAccountToken"] is False
        assert {"name": "engine-cache", "persistentVolumeClaim": {
            "claimName": first["spec"]["cache"]["claimName"]}} in pod["volumes"]
        assert not job["metadata"].get("ownerReferences")
        assert current in [e["metadata"]["name"] for e in sb.objects("llmengines")]
        assert sb.operator_error is None


async def test_by_default_the_sweep_deletes_records_and_starts_no_purge_job():
    async with Sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                       timings=FAST_COLLECTION) as sb:
        await _superseded_engine_collected(sb)
        await asyncio.sleep(1.5)
        assert _purge_jobs(sb) == []
        assert sb.operator_error is None


async def test_a_cancelled_build_s_pod_goes_with_its_job(make_sandbox, backend):
    """The build Job of an engine no service wants any more is deleted with its pod: a batch/v1
    Job deleted without a propagation policy orphans its pods (which would go on using the
    GPUs), and the API server takes the policy from the DeleteOptions body alone when there is
    one (the UID and resourceVersion preconditions), not from the query. The Job was left with
    the ``orphan`` finalizer, and its pod ran on without an owner."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()  # no kubelet: the build's pod stays pending
        await sb.create(_named("moved"))
        await sb.wait_for(lambda: sb.objects("jobs") and _engine_name(sb, "moved"), what="the first build")
        name = _engine_name(sb, "moved") + "-build"

        def pods():
            return [p["metadata"]["name"] for p in sb.objects("pods")
                    if (p["metadata"].get("labels") or {}).get("job-name") == name]
        await sb.wait_for(pods, timeout=30, what="the first build's pod")
        await sb.patch_spec(NS, "moved", {"engine": {"maxBatchSize": 32}})
        await sb.wait_for(lambda: sb.get("jobs", name, NS) is None, what="the superseded build Job deleted")
        await sb.wait_for(lambda: not pods(), timeout=30, what="its pod collected with it")
        assert sb.operator_error is None


async def test_what_a_delete_takes_with_it_is_what_its_options_say(make_sandbox, backend):
    """The garbage collector as the API server drives it, on both back-ends: a batch/v1 Job
    deleted without a propagation policy orphans its dependents (kubernetes/kubernetes,
    pkg/registry/batch/job/strategy.go, ``DefaultGarbageCollectionPolicy``), a core/v1
    Service takes them with it (the store's default), ``Background`` takes a Job's too, and
    a DeleteOptions body is read alone: a policy in the query beside it is ignored
    (k8s.io/apiserver, pkg/endpoints/handlers/delete.go, ``DeleteResource``). A ConfigMap
    stands for the dependents: no controller of either back-end touches it."""
    async with make_sandbox() as sb:
        sb.add_namespace(NS)
        ns = sb.ns(NS)

        async def owned_by(kind, name, body):
            owner = await sb.api.apply({"kind": kind, "metadata": {"name": name, "namespace": ns}, **body})
            await sb.api.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                "name": f"{name}-part", "namespace": ns, "ownerReferences": [{
                    "apiVersion": owner["apiVersion"], "kind": kind, "name": name,
                    "uid": owner["metadata"]["uid"]}]}})
            return owner

        def parts():
            return {c["metadata"]["name"]: [o["name"] for o in c["metadata"].get("ownerReferences") or []]
                    for c in sb.objects("configmaps") if c["metadata"]["name"].endswith("-part")}

        job = {"apiVersion": "batch/v1", "spec": {"suspend": True, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}
        service = {"apiVersion": "v1", "spec": {"ports": [{"port": 80}]}}
        plain = await owned_by("Job", "plain", job)
        cascaded = await owned_by("Job", "cascaded", job)
        queried = await owned_by("Job", "queried", job)
        fronted = await owned_by("Service", "fronted", service)
        assert parts() == {"plain-part": ["plain"], "cascaded-part": ["cascaded"],
                           "queried-part": ["queried"], "fronted-part": ["fronted"]}

        await sb.api.delete(plain)  # a UID precondition in the body, no policy
        await sb.api.delete(cascaded, background=True)
        await sb.api._call("DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs/queried",
                           {"apiVersion": "v1", "kind": "DeleteOptions",
                            "preconditions": {"uid": queried["metadata"]["uid"]}},
                           query=[("propagationPolicy", "Background")])
        await sb.api.delete(fronted)
        await sb.wait_for(lambda: not sb.objects("jobs") and not sb.get("services", "fronted", NS)
                          and parts() == {"plain-part": [], "queried-part": []},
                          timeout=30, what="the Jobs' parts orphaned or collected as asked")
