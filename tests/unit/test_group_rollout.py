"""A multi-node service's rollout, as the LeaderWorkerSet controller reports it.

LWS v0.9.0 added ``status.observedGeneration`` (kubernetes-sigs/lws, config/crd/bases/
leaderworkerset.x-k8s.io_leaderworkersets.yaml: v0.8.0's status has conditions,
hpaPodSelector, readyReplicas, replicas and updatedReplicas; v0.9.0's adds observedGeneration,
which pkg/controllers/leaderworkerset_controller.go ``updateStatus`` writes). Against an older
controller a group that serves was never Ready: the rollout waited for a field that never
comes. Without it, Kiln takes the status as current unless its own apply has just changed
the LeaderWorkerSet (the controller answers a change within milliseconds; the next look is
ROLLOUT_POLL_SECONDS later)."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from kiln.decide import decide
from kiln.decide.status import get_condition
from kiln.decide.decide import rolled_out

from .test_decide import World, _spec, snapshot

MULTI_NODE = _spec(gpus=16, parallelism={"tensor": 8, "pipeline": 2})


def _before_v0_9(world: World, status: dict[str, Any] | None = None) -> Any:
    """``world``'s snapshot, its LeaderWorkerSet's status as LWS v0.8 writes it."""
    snap = snapshot(world)
    workload = snap.intent.rendered.workload
    key = (workload["kind"], workload["metadata"]["name"])
    live = copy.deepcopy(snap.cluster.children[key])
    assert live["kind"] == "LeaderWorkerSet"
    live["metadata"]["generation"] = 4
    live["status"] = status if status is not None else {
        "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1,
        "hpaPodSelector": "leaderworkerset.sigs.k8s.io/name=mistral-7b-group,"
                          "leaderworkerset.sigs.k8s.io/worker-index=0",
        "conditions": [{"type": "Available", "status": "True", "reason": "AllGroupsReady",
                        "message": "All replicas are ready", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    return replace(snap, cluster=replace(snap.cluster, children={**snap.cluster.children, key: live}))


def _ready(actions: Any) -> tuple[str, str]:
    condition = get_condition(actions.status, "Ready")
    return condition.status, condition.reason


def test_a_group_from_a_controller_before_v0_9_is_ready():
    actions = decide(_before_v0_9(World(spec=MULTI_NODE, engine="ready", workload="ready")))
    assert actions.apply == []
    assert _ready(actions) == ("True", "ReplicasReady") and actions.requeue is None


def test_not_while_the_apply_has_just_changed_it():
    snap = _before_v0_9(World(spec=MULTI_NODE, engine="ready", workload="ready"))
    actions = decide(snap)
    applied = copy.deepcopy(snap.cluster.children[("LeaderWorkerSet", "mistral-7b-group")])
    applied["metadata"]["generation"] = 5  # what execute's apply returned
    rolled_out(actions, applied)
    assert _ready(actions) == ("False", "RollingOut") and actions.requeue is not None
    rolled_out(actions, snap.cluster.children[("LeaderWorkerSet", "mistral-7b-group")])
    assert _ready(actions) == ("True", "ReplicasReady")


def test_nor_before_the_controller_has_written_its_status():
    actions = decide(_before_v0_9(World(spec=MULTI_NODE, engine="ready", workload="ready"), status={}))
    assert _ready(actions) == ("False", "RollingOut")
