"""A pod the scheduler cannot place is said in the service's status, with the scheduler's
own message: a serving replica (the service serves on the ones placed, and says why the
rest are not), or the build Job's pod (the engine waits on it). The integration suite has
kube-scheduler itself write those messages (tests/integration/test_scheduling.py)."""

from __future__ import annotations

from dataclasses import replace

from kiln.controller.cache import TERMINATION_MESSAGE_CHARS, UNSCHEDULABLE_MESSAGE_CHARS, slim_pod
from kiln.controller.gather import _failing
from kiln.decide import decide
from kiln.decide.status import get_condition

from .test_decide import ENGINE_KEYED, World, snapshot

WHY = ("0/7 nodes are available: 2 Insufficient nvidia.com/gpu, 5 node(s) didn't match Pod's node "
       "affinity/selector.")


def _with(world: World, **cluster) -> object:
    snap = snapshot(world)
    return replace(snap, cluster=replace(snap.cluster, **cluster))


def test_a_serving_pod_that_cannot_be_placed_is_said_while_none_is_ready():
    actions = decide(_with(World(engine="ready", workload="rolling", status=ENGINE_KEYED),
                           unschedulable=("mistral-7b-server-abc", WHY)))
    reconciling = get_condition(actions.status, "Reconciling")
    assert (reconciling.status, reconciling.reason) == ("True", "Unschedulable")
    assert f"pod mistral-7b-server-abc cannot be scheduled: {WHY}" in reconciling.message
    assert "lower spec.replicas" in reconciling.message and actions.requeue is not None
    plain = decide(snapshot(World(engine="ready", workload="rolling", status=ENGINE_KEYED)))
    assert get_condition(plain.status, "Reconciling").reason == "RollingOut"


def test_a_service_serving_on_the_replicas_placed_says_why_the_rest_are_not():
    ready = decide(snapshot(World(engine="ready", workload="ready")))
    assert get_condition(ready.status, "Ready").reason == "ReplicasReady" and ready.requeue is None
    short = decide(_with(World(engine="ready", workload="ready"), unschedulable=("mistral-7b-server-abc", WHY)))
    condition = get_condition(short.status, "Ready")
    assert (condition.status, condition.reason) == ("True", "ReplicasReady")
    assert condition.message.endswith("lower spec.replicas)") and WHY in condition.message
    assert short.requeue is not None  # looked at again until it is placed


def test_a_build_pod_that_cannot_be_placed_is_said_while_the_engine_waits():
    actions = decide(_with(World(engine="pending", job="running"), build_unschedulable=("x-build-abc", WHY)))
    reconciling = get_condition(actions.status, "Reconciling")
    assert (reconciling.status, reconciling.reason) == ("True", "Unschedulable")
    assert reconciling.message.startswith("waiting for engine ")
    assert f"its build pod x-build-abc cannot be scheduled: {WHY}" in reconciling.message
    assert "a node with 1 free GPUs" in reconciling.message


def test_the_pod_cache_keeps_why_a_pod_is_not_placed_and_no_more():
    pod = {"metadata": {"name": "p", "namespace": "llm"}, "spec": {"containers": []},
           "status": {"phase": "Pending", "conditions": [
               {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "x" * 5000,
                "lastTransitionTime": "t"}]}}
    [kept] = slim_pod(pod)["status"]["conditions"]
    assert kept == {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "x" * UNSCHEDULABLE_MESSAGE_CHARS}
    pod["status"]["conditions"][0]["status"] = "True"
    assert slim_pod(pod)["status"]["conditions"] == []


UNBOUND = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. not found"
MISSING = 'persistentvolumeclaim "kiln-engine-cache" not found'


def test_a_pod_held_back_by_its_claims_is_told_to_make_them_not_to_add_gpus():
    """The scheduler's reason is the engine cache's claim (missing, or no StorageClass binds
    it), not a GPU: the hint names the claim, not GPUs (kube-scheduler's volumebinding
    plugin's messages)."""
    for why in (UNBOUND, MISSING):
        build = decide(_with(World(engine="pending", job="running"), build_unschedulable=("x-build-abc", why)))
        message = get_condition(build.status, "Reconciling").message
        assert f"cannot be scheduled: {why} (the pod mounts the PersistentVolumeClaim kiln-engine-cache of " \
               "this namespace: create it" in message
        assert "free GPUs" not in message
        serving = decide(_with(World(engine="ready", workload="rolling", status=ENGINE_KEYED),
                               unschedulable=("mistral-7b-server-abc", why)))
        message = get_condition(serving.status, "Reconciling").message
        assert "PersistentVolumeClaim kiln-engine-cache of this namespace" in message
        assert "lower spec.replicas" not in message


LAST_WORDS = "error: engineDir: the cache entry /cache/ab is damaged: engine/rank0.engine has another sha256"


def _crash_looping(name, ready=False, message=LAST_WORDS):
    return {"metadata": {"name": name, "namespace": "llm"}, "spec": {"containers": []},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{
                           "name": "server", "ready": ready, "restartCount": 3, "image": "i", "imageID": "x",
                           "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                           "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": message,
                                                        "startedAt": "t", "finishedAt": "t"}}}]}}


def test_the_pod_cache_keeps_how_a_container_failed_and_no_more():
    pod = _crash_looping("p", message="x" * 9000)
    pod["status"]["containerStatuses"].append({"name": "sidecar", "restartCount": 0, "state": {
        "terminated": {"exitCode": 0, "reason": "Completed", "message": "fine"}}})
    assert slim_pod(pod)["status"]["containerStatuses"] == [
        {"name": "server", "restartCount": 3,
         "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": "x" * TERMINATION_MESSAGE_CHARS}}},
        {"name": "sidecar", "restartCount": 0}]


def test_a_serving_pod_that_exits_is_said_with_its_last_words_unless_it_serves_again():
    slim = [slim_pod(_crash_looping("s-b")), slim_pod(_crash_looping("s-a", ready=True))]
    assert _failing(slim) == ("s-b", f" (container server, exit code 2): {LAST_WORDS}", 3)
    assert _failing([slim[1]]) is None  # restarted once, and serving since

    actions = decide(_with(World(engine="ready", workload="rolling", status=ENGINE_KEYED),
                           failing=("s-b", f" (container server, exit code 2): {LAST_WORDS}", 3)))
    reconciling = get_condition(actions.status, "Reconciling")
    assert (reconciling.status, reconciling.reason) == ("True", "ServerFailing")
    assert f"pod s-b exits (container server, exit code 2): {LAST_WORDS} (restarted 3 times" in reconciling.message
    assert actions.requeue is not None
    serving = decide(_with(World(engine="ready", workload="ready"), failing=("s-b", " (container server)", 3)))
    ready = get_condition(serving.status, "Ready")
    assert (ready.status, ready.reason) == ("True", "ReplicasReady") and "pod s-b exits" in ready.message
    assert serving.requeue is not None  # looked at again until it starts


def test_a_container_the_kernel_killed_for_memory_is_said_so():
    pod = _crash_looping("s-a", message="[TensorRT-LLM][INFO] Loaded engine size: 15 GiB")
    pod["status"]["containerStatuses"][0]["lastState"]["terminated"].update(exitCode=137, reason="OOMKilled")
    assert _failing([slim_pod(pod)]) == (
        "s-a", " (container server, exit code 137, OOMKilled): [TensorRT-LLM][INFO] Loaded engine size: 15 GiB", 3)


def test_a_container_that_exited_and_was_not_restarted_yet_has_its_log_read_as_it_is():
    actions = decide(_with(World(engine="ready", workload="rolling", status=ENGINE_KEYED),
                           failing=("s-b", " (container server, exit code 2): x", 0)))
    message = get_condition(actions.status, "Reconciling").message
    assert message.endswith("exits (container server, exit code 2): x (its log: kubectl logs -n llm s-b)"), message
