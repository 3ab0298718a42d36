"""What a spec change leaves behind: the children a service's spec no longer asks for are
deleted, if the service controls them; the previous workload only once the new one is Ready.

The inventory (``status.children``) names what was applied; ``decide`` is handed the stale
objects as read (controller/gather.py reads them), and nothing else is ever deleted."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from typing import Any

import pytest
import yaml

from kiln.api import LLMServiceStatus
from kiln.controller.execute import execute
from kiln.controller.gather import recorded, unwanted
from kiln.controller.kube import API_VERSION_OF, ApiException
from kiln.decide import decide, intend, parse, workload_replicas
from kiln.decide.decide import children
from kiln.decide.policy import Policy
from kiln.decide.status import parse_status
from kiln.planner import model_config
from kiln.render import Rendered, inventory, workload_keys

from ..conftest import ROOT
from .test_decide import NOW, REF, World, _condition_of, _owned, _ready_status, _spec, snapshot

HPA = {"mode": "hpa", "minReplicas": 1, "maxReplicas": 3}


def _rendered(spec: dict[str, Any], name: str = "mistral-7b") -> Rendered:
    ref = replace(REF, name=name)
    parsed = parse(ref, spec, Policy())
    model, _ = model_config(parsed.spec.model.source)
    rendered = intend(ref, parsed, model, workload_replicas(parsed.spec, None)).rendered
    assert isinstance(rendered, Rendered)
    return rendered


def _specs() -> list[dict[str, Any]]:
    """Every example's spec, and Mistral's in every autoscaling mode, with a NetworkPolicy,
    a gateway, and over two nodes."""
    examples = [doc["spec"] for path in sorted((ROOT / "examples").glob("*.yaml"))
                for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "LLMService"]
    modes = [_spec(autoscaling={**HPA, "mode": mode}) for mode in ("builtin", "hpa", "keda", "keda-http")]
    return [*examples, *modes, _spec(networkPolicy={"enabled": True}), _spec(gateway={"name": "gw"}),
            _spec(gpus=16, parallelism={"tensor": 8, "pipeline": 2})]


@pytest.mark.parametrize("name", ["mistral-7b", "a" * 63])
def test_every_child_any_spec_makes_is_in_the_inventory(name):
    possible = inventory(name)
    for spec in _specs():
        for child in children(_rendered(copy.deepcopy(spec), name)):
            key = (child["kind"], child["metadata"]["name"])
            assert key in possible and API_VERSION_OF[key[0]] == child["apiVersion"], (key, spec)


def _leftover(obj: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    live = _owned(obj, uid)
    live["metadata"]["uid"] = f"{obj['kind']}-uid"
    return live


def _changed(world: World, before: dict[str, Any], uid: str = "uid-1") -> Any:
    """``world``'s snapshot, after a spec that made ``before``'s children: its inventory, and
    those of them the spec no longer asks for as the API server holds them."""
    old = children(_rendered(before))
    snap = snapshot(replace(world, status={**world.status,
                                            "children": [f"{c['kind']}/{c['metadata']['name']}" for c in old]}))
    wanted = {(c["kind"], c["metadata"]["name"]) for c in children(snap.intent.rendered)}
    stale = {(c["kind"], c["metadata"]["name"]): _leftover(c, uid) for c in old
             if (c["kind"], c["metadata"]["name"]) not in wanted}
    return replace(snap, cluster=replace(snap.cluster, leftovers=stale))


def test_a_scaler_the_spec_no_longer_asks_for_is_deleted_and_leaves_the_inventory():
    world = World(engine="ready", workload="ready", status=_ready_status())
    actions = decide(_changed(world, _spec(autoscaling=HPA, networkPolicy={"enabled": True})))
    # The HPA's up to three replicas had a disruption budget; one replica for good has none.
    assert [(o["kind"], o["metadata"]["name"]) for o in actions.delete] == [
        ("NetworkPolicy", "mistral-7b-server"), ("PodDisruptionBudget", "mistral-7b-server"),
        ("HorizontalPodAutoscaler", "mistral-7b")]
    assert [(kind, reason) for kind, reason, _ in actions.events] == [("Normal", "Removed")] * 3
    assert actions.status.children == ["Deployment/mistral-7b-server", "Service/mistral-7b-server",
                                       "ServiceAccount/mistral-7b-server"]


def test_what_the_service_does_not_control_is_never_deleted():
    world = World(engine="ready", workload="ready", status=_ready_status())
    for uid in ("someone-else", None):
        snap = _changed(world, _spec(autoscaling=HPA), uid="someone-else")
        if uid is None:  # no controller at all
            for leftover in snap.cluster.leftovers.values():
                leftover["metadata"]["ownerReferences"] = []
        actions = decide(snap)
        assert actions.delete == [] and actions.events == []
        assert "HorizontalPodAutoscaler/mistral-7b" not in actions.status.children


def test_the_previous_workload_goes_only_once_the_service_is_ready_on_the_new_one():
    multi_node = _spec(gpus=16, parallelism={"tensor": 8, "pipeline": 2})
    rolling = decide(_changed(World(engine="ready", workload="rolling", status=_ready_status()), multi_node))
    assert [o["kind"] for o in rolling.retire] == ["LeaderWorkerSet"]
    # The launcher's account and Role go at once; the group serves on until then.
    assert {o["kind"] for o in rolling.delete} == {"ServiceAccount", "Role", "RoleBinding"}
    assert "LeaderWorkerSet/mistral-7b-group" in rolling.status.children
    ready = decide(_changed(World(engine="ready", workload="ready", status=_ready_status()), multi_node))
    assert ready.retire == [] and "LeaderWorkerSet" in [o["kind"] for o in ready.delete]
    assert "LeaderWorkerSet/mistral-7b-group" not in ready.status.children
    assert workload_keys("mistral-7b") == {("Deployment", "mistral-7b-server"),
                                           ("LeaderWorkerSet", "mistral-7b-group")}


def test_a_service_still_building_deletes_nothing_and_keeps_its_inventory():
    world = World(engine="pending", job="running", workload="old-engine", status=_ready_status())
    snap = _changed(world, _spec(autoscaling=HPA))
    actions = decide(snap)
    assert actions.delete == [] and actions.status.children == sorted(snap.status.children)


def test_the_inventory_names_only_the_services_own_objects():
    """The status is not a way to name someone else's object: only what render can make for
    this service, and not what the spec asks for now, is read."""
    wanted = children(_rendered(_spec()))
    hostile = ["Deployment/victim", "Secret/mistral-7b-server", "HorizontalPodAutoscaler/other",
               "Deployment/mistral-7b-server", "ClusterRole/mistral-7b", "HorizontalPodAutoscaler/mistral-7b",
               "HorizontalPodAutoscaler/mistral-7b", "HorizontalPodAutoscaler", "/mistral-7b"]
    stale = unwanted(hostile, wanted, "mistral-7b", "llm")
    assert stale == [{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                      "metadata": {"name": "mistral-7b", "namespace": "llm"}}]
    assert unwanted([], wanted, "mistral-7b", "llm") == []


def test_without_an_inventory_every_object_the_service_could_have_made_is_read_once():
    """A service an operator without ``status.children`` reconciled: what an earlier spec
    change left is found at the next reconcile (the caches answer for the cached kinds)."""
    wanted = children(_rendered(_spec()))
    stale = {(o["kind"], o["metadata"]["name"]) for o in unwanted(None, wanted, "mistral-7b", "llm")}
    assert stale == inventory("mistral-7b") - {(c["kind"], c["metadata"]["name"]) for c in wanted}
    assert ("HorizontalPodAutoscaler", "mistral-7b") in stale and ("LeaderWorkerSet", "mistral-7b-group") in stale


def test_a_malformed_inventory_is_dropped_not_trusted():
    assert parse_status({"children": ["Deployment/x"] * 32}).children == ["Deployment/x"] * 32
    for bad in (["Deployment/x"] * 33, ["Deployment/../etc"], ["Deployment/X"], [7]):
        assert parse_status({"children": bad}).children is None
    assert LLMServiceStatus.model_json_schema()["properties"]["children"]


class _RefusingApi:
    """Deletes refused with a 403, as by a ClusterRole from before the delete verbs."""

    async def delete(self, obj, background=False):
        raise ApiException(status=403, reason="forbidden")

    async def apply(self, obj):
        return obj


def test_a_delete_the_operator_may_not_make_is_said_and_leaves_the_inventory():
    world = World(engine="ready", workload="ready", status=_ready_status())
    actions = decide(_changed(world, _spec(autoscaling=HPA)))
    assert [reason for _, reason, _ in actions.events] == ["Removed", "Removed"]  # its budget too
    actions = asyncio.run(execute(actions, _RefusingApi(), {}, NOW, 3))
    assert {(type_, reason) for type_, reason, _ in actions.events} == {("Warning", "NotRemoved")}
    [message] = [m for _, _, m in actions.events if "HorizontalPodAutoscaler" in m]
    assert "HorizontalPodAutoscaler mistral-7b" in message and "horizontalpodautoscalers" in message
    assert "HorizontalPodAutoscaler/mistral-7b" not in actions.status.children


def _entries(spec: dict[str, Any]) -> list[str]:
    return sorted(f"{c['kind']}/{c['metadata']['name']}" for c in children(_rendered(spec)))


def test_the_inventory_starts_empty_or_with_what_an_earlier_operator_left():
    new = decide(snapshot(World(engine="pending", job="running")))
    assert new.apply == [] and new.status.children == _entries(_spec())  # building: named before applied
    world = World(engine="pending", job="running", workload="old-engine", status=_ready_status())
    snap = _changed(world, _spec(autoscaling=HPA))
    snap = replace(snap, status=snap.status.model_copy(update={"children": None}))
    building = decide(snap)
    assert building.delete == []
    assert building.status.children == sorted(["HorizontalPodAutoscaler/mistral-7b",
                                               "PodDisruptionBudget/mistral-7b-server", *_entries(_spec())])


def test_a_reconcile_names_what_it_will_apply_in_the_status_it_writes_before():
    """A reconcile that cannot apply yet (its engine builds; an API the spec needs is not
    served) still records what it will apply once it can: the status it writes now is on
    record before that apply, so an operator stopped between the apply and the status write
    after it leaves nothing the inventory does not name (the superset a tool keeps while its
    set changes: kubernetes/enhancements, keps/sig-cli/3659-kubectl-apply-prune, the hint
    annotations)."""
    world = World(engine="ready", workload="ready", status=_ready_status())
    before = _entries(_spec())
    assert decide(snapshot(world)).status.children == before
    gateway = _spec(gateway={"name": "gw"})
    refused = decide(snapshot(replace(world, spec=gateway, serves=frozenset())))
    assert refused.apply == [] and "MissingDependency" in {c.reason for c in refused.status.conditions}
    assert refused.status.children == sorted({*before, *_entries(gateway)})
    assert {"HTTPRoute", "InferencePool"} <= {entry.partition("/")[0] for entry in refused.status.children}
    building = decide(snapshot(replace(world, spec=_spec(precision="fp8"), engine="pending", job="running")))
    assert building.apply == [] and building.status.children == before


def test_a_reconcile_that_may_have_applied_without_a_status_write_reads_all_it_could_have_made():
    """The inventory holds what was applied at ``observedGeneration`` and what that
    generation's spec asked for. An apply whose status write never came was made for a
    later generation: if the generation has moved on by two or more since the status was
    written (or at all, with no status yet), what that reconcile made may be neither, and every
    object the service could have made is read once (a few reads, at most twenty)."""
    status = parse_status({"children": ["Deployment/mistral-7b-server"], "observedGeneration": 4})
    assert recorded(status, 4) == recorded(status, 5) == ["Deployment/mistral-7b-server"]
    assert recorded(status, 6) is None
    assert recorded(parse_status({}), 1) == []  # a new service: nothing made for another spec
    assert recorded(parse_status({}), 2) is None
    assert recorded(parse_status({"observedGeneration": 4}), 4) is None  # an operator without it


def test_a_child_the_spec_gains_without_a_spec_change_is_on_record_before_it_is_applied():
    """The wanted set can grow at the generation a status already covers (an operator
    upgrade that renders a new kind, a different model config from the Hub). Applied then,
    with the status write after it lost, the next spec change (one generation on, so the
    inventory is trusted) would not know of it: so the inventory is written first, and the
    child applied by the reconcile after (KEP-3659's superset, ahead of the apply)."""
    snap = snapshot(World(engine="ready", workload="ready", status=_ready_status()))
    assert snap.status.observed_generation == snap.generation
    gained = next(c for c in children(snap.intent.rendered) if c["kind"] == "Service")
    key, name = (gained["kind"], gained["metadata"]["name"]), f"Service/{gained['metadata']['name']}"
    before = [e for e in snap.status.children if e != name]
    snap = replace(snap, status=snap.status.model_copy(update={"children": before}),
                   cluster=replace(snap.cluster, children={k: v for k, v in snap.cluster.children.items() if k != key}))
    first = decide(snap)
    assert first.apply == [] and name in first.status.children and first.requeue is not None
    second = decide(replace(snap, status=first.status))
    assert [f"{c['kind']}/{c['metadata']['name']}" for c in second.apply] == [name]
    # At a new generation the status write after the apply, or gather's reading of everything
    # two generations on, covers it: applied at once.
    changed = decide(replace(snap, generation=snap.generation + 1))
    assert name in [f"{c['kind']}/{c['metadata']['name']}" for c in changed.apply]


KEDA = {**HPA, "mode": "keda"}
KEDA_HTTP = {"mode": "keda-http", "minReplicas": 0, "maxReplicas": 3}
ADD_ON_FINALIZER = "httpscaledobject.http.keda.sh"


def _handing_over(hso_deleting: bool = False, holder_uid: str | None = None) -> Any:
    """A service moved from keda-http to keda mode: the ScaledObject its spec asks for is
    still the one KEDA's HTTP add-on made from the service's HTTPScaledObject (of the same
    name, controlled by it), and that HTTPScaledObject carries the add-on's finalizer."""
    world = World(engine="ready", workload="ready", status=_ready_status(), spec=_spec(autoscaling=KEDA))
    snap = _changed(world, _spec(autoscaling=KEDA_HTTP))
    hso = snap.cluster.leftovers[("HTTPScaledObject", "mistral-7b")]
    hso["metadata"]["finalizers"] = [ADD_ON_FINALIZER]
    if hso_deleting:
        hso["metadata"]["deletionTimestamp"] = NOW
    wanted = next(c for c in children(snap.intent.rendered) if c["kind"] == "ScaledObject")
    made = copy.deepcopy(wanted)
    made["metadata"]["ownerReferences"] = [{
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject", "name": "mistral-7b",
        "uid": holder_uid or hso["metadata"]["uid"], "controller": True}]
    made["metadata"]["annotations"] = {}
    lives = {**snap.cluster.children, ("ScaledObject", "mistral-7b"): made}
    return replace(snap, generation=snap.generation + 1, cluster=replace(snap.cluster, children=lives))


def test_a_name_still_held_by_what_a_dropped_child_made_is_waited_for_not_refused():
    """KEDA's HTTP add-on makes a ScaledObject of the HTTPScaledObject's name, controlled by
    it: the name keda mode's ScaledObject wants. Kiln deletes the HTTPScaledObject the spec
    no longer asks for and waits for the controller-manager's garbage collector to take the
    add-on's ScaledObject with it, instead of stalling on a conflict with its own leftover."""
    first = decide(_handing_over())
    assert _condition_of(first, "Stalled") != ("True", "ResourceConflict")
    assert ("HTTPScaledObject", "mistral-7b") in [(o["kind"], o["metadata"]["name"]) for o in first.delete]
    assert "ScaledObject" not in [c["kind"] for c in first.apply]
    assert _condition_of(first, "Reconciling") == ("True", "RollingOut")
    assert "ScaledObject mistral-7b" in first.requeue.message and "HTTPScaledObject mistral-7b" in first.requeue.message
    # Kept on record while its finalizer holds it, so the next reconcile reads it again.
    assert "HTTPScaledObject/mistral-7b" in first.status.children

    going = decide(_handing_over(hso_deleting=True))
    assert ("HTTPScaledObject", "mistral-7b") not in [(o["kind"], o["metadata"]["name"]) for o in going.delete]
    assert not [message for _, _, message in going.events if "HTTPScaledObject" in message]
    assert ADD_ON_FINALIZER in going.requeue.message and "by hand" in going.requeue.message
    assert "HTTPScaledObject/mistral-7b" in going.status.children

    snap = _handing_over()
    gone = replace(snap, cluster=replace(
        snap.cluster, leftovers={**snap.cluster.leftovers, ("HTTPScaledObject", "mistral-7b"): None},
        children={**snap.cluster.children, ("ScaledObject", "mistral-7b"): None}))
    done = decide(gone)
    assert "ScaledObject" in [c["kind"] for c in done.apply]
    assert "HTTPScaledObject/mistral-7b" not in done.status.children


def test_a_name_held_by_what_another_object_made_is_still_a_conflict():
    actions = decide(_handing_over(holder_uid="someone-elses"))
    assert _condition_of(actions, "Stalled") == ("True", "ResourceConflict")
    assert actions.apply == []
