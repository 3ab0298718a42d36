"""Kill the operator at every write of a reconcile, restart it, and check it converges.

The operator is frozen at its k-th reconcile write, or at whatever write (kopf's own
bookkeeping included) comes right after its (k-1)-th; it is then stopped while that write
hangs, so nothing after it happens, and a new operator starts on whatever state was left. For
every k up to the clean run's last reconcile write the end state must be the clean run's: the
same objects, the same owner references, one build Job ever created, and the status complete.

On both back-ends: the emulator freezes the write itself (tests/support/faults.py); in front
of the real API server a proxy only the operator talks to holds it (tests/support/proxy.py),
and the new operator meets what the server's own controllers did meanwhile.
"""

from __future__ import annotations

import contextlib
import copy
import json

import yaml

from kiln.decide.conditions import is_true
from kiln.demo.sandbox import Sandbox

from ..conftest import ROOT
from ..support.faults import FreezingEmulator
from ..support.proxy import FaultProxy
from ..support.real_cluster import KINDS_BY_PLURAL, RealSandbox
from .test_operator import FAST_SCALING, autoscaled_mistral

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
# What the operator owns or creates; Events, Pods and the cluster's own objects aside.
OWNED = ("llmservices", "llmengines", "jobs", "deployments", "services", "serviceaccounts",
         "roles", "rolebindings", "scaledobjects", "horizontalpodautoscalers", "leaderworkersets",
         "persistentvolumeclaims", "httpscaledobjects")


def _ready(sb, name="mistral-7b"):
    svc = sb.get("llmservices", name, NS)
    return svc is not None and is_true((svc.get("status") or {}).get("conditions", []), "Ready")


@contextlib.asynccontextmanager
async def _freezing(backend, request, **options):
    """``(sandbox, freezer)`` on ``backend``: the freezer has ``freeze_after``, ``frozen``,
    ``release`` and ``writes`` (:class:`FreezingEmulator` or :class:`FaultProxy`)."""
    if backend == "emulator":
        emulator = FreezingEmulator()
        async with Sandbox(emulator=emulator, **options) as sb:
            sb.add_namespace(NS)
            yield sb, emulator
        return
    plane = request.getfixturevalue("control_plane")
    with FaultProxy(plane.server, plane.ca_file) as proxy:
        async with RealSandbox(plane, operator_url=proxy.url, **options) as sb:
            sb.add_namespace(NS)
            yield sb, proxy


def _created(sb, freezer, plural):
    """The names of every ``plural`` ever created: the emulator keeps its history; the proxy
    saw every create the operator made (the real server keeps none)."""
    if isinstance(freezer, FaultProxy):
        return [name for kind, name in freezer.created if kind == plural]
    return [o["metadata"]["name"] for t, o in sb.events(plural) if t == "ADDED"]


def _state(sb):
    """Every owned object as (kind, namespace, name) -> the kinds and names of its owners."""
    # A real server's list items carry no kind: the plural's. Its ServiceAccount controller
    # makes each namespace's ``default``.
    objects = [(KINDS_BY_PLURAL[plural].kind, o) for plural in OWNED for o in sb.objects(plural)
               if (plural, o["metadata"]["name"]) != ("serviceaccounts", "default")]
    uids = {o["metadata"]["uid"]: (kind, o["metadata"]["name"]) for kind, o in objects}
    here = {sb.ns(NS): NS}
    return {(kind, here.get(o["metadata"].get("namespace"), o["metadata"].get("namespace")), o["metadata"]["name"]):
            sorted((ref["kind"], ref["name"], uids.get(ref["uid"], "dangling"), bool(ref.get("controller")))
                   for ref in o["metadata"].get("ownerReferences", []))
            for kind, o in objects}


def _service_status(sb):
    status = copy.deepcopy(sb.get("llmservices", "mistral-7b", NS)["status"])
    for condition in status.get("conditions", []):
        condition.pop("lastTransitionTime", None)
    return {k: status[k] for k in ("engine", "endpoint", "tpPp", "readyReplicas", "conditions",
                                   "observedGeneration")}


async def _run(kill: tuple[int, bool] | None, backend, request):
    """One lifetime of the service, killed at ``kill``: (k, any_write), see
    FreezingEmulator.freeze_after. Returns (end state, status, whether the kill happened,
    the operator's reconcile writes before it, Job names ever created)."""
    async with _freezing(backend, request, build_seconds=0.3, start_seconds=0.1, retry_delay=0.1,
                         exit_timeout=0.05) as (sb, emulator):
        if kill is not None:
            emulator.freeze_after(kill[0], any_write=kill[1])
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(copy.deepcopy(MISTRAL))
        if kill is None:
            await sb.wait_for(lambda: _ready(sb), what="Ready")
            writes = emulator.writes
        else:
            await sb.wait_for(lambda: emulator.frozen or _ready(sb), what=f"the kill at {kill}")
            writes = emulator.writes
            killed = emulator.frozen
            await sb.stop_kubelet()  # the cluster moves on while no operator runs
            await sb.stop_operator()
            emulator.release()
            assert sb.operator_error is None
            sb.start_kubelet()
            await sb.start_operator()
            await sb.wait_for(lambda: _ready(sb), what=f"Ready after the kill at {kill}")
        # Let a resync pass settle anything still in flight, then read the end state.
        await sb.wait_for(lambda: _ready(sb) and sb.get("llmservices", "mistral-7b", NS)["status"]
                          .get("readyReplicas") == 1, what="status settled")
        state, status = _state(sb), _service_status(sb)
        jobs = _created(sb, emulator, "jobs")
        assert sb.operator_error is None
        state, status, jobs = _named_alike(sb, state, status, jobs)
    return state, status, (kill is not None and killed), writes, jobs


def _named_alike(sb, state, status, jobs):
    """The run's engine name and key as ``ENGINE`` and ``KEY``, its namespace as ``llm``: on
    the real server each run has a namespace of its own, and the engine's key names where its
    cache is."""
    engine = status["engine"]

    def alike(text):
        return text.replace(engine["name"], "ENGINE").replace(engine["key"], "KEY").replace(sb.ns(NS), NS)
    return ({(kind, namespace, alike(name)): owners for (kind, namespace, name), owners in state.items()},
            json.loads(alike(json.dumps(status))), [alike(job) for job in jobs])


async def test_the_clean_run_owns_exactly_what_it_creates(backend, request):
    state, status, _, writes, jobs = await _run(None, backend, request)
    engine = status["engine"]["name"]
    assert state == {
        ("LLMService", NS, "mistral-7b"): [],
        # The engine record is cluster-wide and shared by every service with the same key:
        # it outlives any one service, so no service owns it.
        ("LLMEngine", None, engine): [],
        ("Job", NS, status["engine"]["buildJob"]): [("LLMService", "mistral-7b", ("LLMService", "mistral-7b"), True)],
        ("ServiceAccount", NS, "mistral-7b-server"): [("LLMService", "mistral-7b", ("LLMService", "mistral-7b"), True)],
        ("Deployment", NS, "mistral-7b-server"): [("LLMService", "mistral-7b", ("LLMService", "mistral-7b"), True)],
        ("Service", NS, "mistral-7b-server"): [("LLMService", "mistral-7b", ("LLMService", "mistral-7b"), True)],
    }
    assert jobs == [status["engine"]["buildJob"]]
    assert writes >= 5


async def test_a_kill_at_every_write_converges_to_the_clean_end_state(backend, request):
    reference, reference_status, _, writes, _ = await _run(None, backend, request)
    # Before each reconcile write, and right after the one before it (so at kopf's finalizer,
    # progress and Event writes too). The reconcile's writes are the same in every run, so
    # every one of these points comes before Ready: each run is really killed there.
    # One cluster at a time: kmock's servers cannot overlap in one event loop.
    for kill in [(k, any_write) for k in range(writes) for any_write in (False, True)]:
        state, status, killed, _, jobs = await _run(kill, backend, request)
        # On the real server the controllers' timing can spare a run the clean run's last
        # status write (it reached Ready one write sooner): the last point only.
        spared = backend == "real" and kill[0] == writes - 1
        assert killed or spared, f"the operator was Ready before the kill at {kill}"
        assert state == reference, f"kill at {kill}"
        assert status == reference_status, f"kill at {kill}"
        assert jobs == [reference_status["engine"]["buildJob"]], f"kill at {kill}: Jobs {jobs}"


async def test_a_kill_in_the_middle_of_a_scale_decision_converges_on_the_new_replica_count(backend, request):
    async with _freezing(backend, request, build_seconds=0.2, start_seconds=0.2, retry_delay=0.1,
                         exit_timeout=0.05, **FAST_SCALING) as (sb, emulator):
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(autoscaled_mistral())
        await sb.wait_for(lambda: _ready(sb), what="Ready")
        reference = _state(sb)

        emulator.freeze_after(0, any_write=True)  # the next write is the scale decision's
        sb.cluster.load["mistral-7b"] = 2.4
        await sb.wait_for(lambda: emulator.frozen, what="the scale decision's first write")
        await sb.stop_operator()
        emulator.release()
        await sb.start_operator()
        await sb.wait_for(lambda: sb.objects("deployments")[0]["spec"]["replicas"] == 3, timeout=30,
                          what="3 replicas after the restart")
        svc = await sb.wait_for(lambda: (s := sb.get("llmservices", "mistral-7b", NS))["status"]
                                .get("desiredReplicas") == 3 and s, what="status.desiredReplicas")
        assert svc["spec"].get("replicas", 1) == 1  # the user's spec is never written
        assert _state(sb) == reference  # no object added, lost or re-owned
        assert len(_created(sb, emulator, "deployments")) == 1 and len(_created(sb, emulator, "jobs")) == 1
        assert sb.operator_error is None
