"""The operator writes a launcher Role only if every existing pod it names is its own
LeaderWorkerSet's, link by link (worker pod -> worker StatefulSet -> leader pod -> leader
StatefulSet -> LeaderWorkerSet, UIDs compared)."""

from __future__ import annotations

import pytest

from kiln.controller.ownership import check_launcher_targets
from kiln.errors import SpecInvalid

NS = "llm"
ROLE = {"kind": "Role", "metadata": {"name": "ci-launcher", "namespace": NS}, "rules": [
    {"apiGroups": [""], "resources": ["pods/exec"], "resourceNames": ["ci-group-0-1"]}]}
WORKLOAD = {"kind": "LeaderWorkerSet", "metadata": {"name": "ci-group", "namespace": NS}}


def _obj(api_version, kind, name, uid, owner=None):
    refs = [{"apiVersion": owner[0], "kind": owner[1], "name": owner[2], "uid": owner[3],
             "controller": True}] if owner else []
    return {"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": NS, "uid": uid, "ownerReferences": refs}}


LWS = _obj("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "ci-group", "u-lws")
LEADER_STS = _obj("apps/v1", "StatefulSet", "ci-group", "u-lsts", ("leaderworkerset.x-k8s.io/v1",
                                                                  "LeaderWorkerSet", "ci-group", "u-lws"))
LEADER = _obj("v1", "Pod", "ci-group-0", "u-leader", ("apps/v1", "StatefulSet", "ci-group", "u-lsts"))
WORKER_STS = _obj("apps/v1", "StatefulSet", "ci-group-0", "u-wsts", ("v1", "Pod", "ci-group-0", "u-leader"))
WORKER = _obj("v1", "Pod", "ci-group-0-1", "u-worker", ("apps/v1", "StatefulSet", "ci-group-0", "u-wsts"))


class FakeApi:
    def __init__(self, *objects):
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    async def get(self, api_version, kind, name, namespace=None):
        return self.objects.get((kind, name))

    async def list(self, api_version, kind, namespace=None, label_selector=None):
        return [o for (k, _), o in self.objects.items() if k == kind]


async def test_the_groups_own_worker_passes():
    api = FakeApi(LWS, LEADER_STS, LEADER, WORKER_STS, WORKER)
    await check_launcher_targets(api, ROLE, WORKLOAD, LWS, "llm/ci")


async def test_no_pod_of_that_name_passes():
    await check_launcher_targets(FakeApi(), ROLE, WORKLOAD, None, "llm/ci")


@pytest.mark.parametrize("objects, lws", [
    # Someone's StatefulSet ci-group-0 and its pod, before the service's LWS exists.
    ((_obj("apps/v1", "StatefulSet", "ci-group-0", "u-theirs"),
      _obj("v1", "Pod", "ci-group-0-1", "u-p", ("apps/v1", "StatefulSet", "ci-group-0", "u-theirs"))), None),
    # The same once the LWS exists: the chain ends at their StatefulSet.
    ((LWS, _obj("apps/v1", "StatefulSet", "ci-group-0", "u-theirs"),
      _obj("v1", "Pod", "ci-group-0-1", "u-p", ("apps/v1", "StatefulSet", "ci-group-0", "u-theirs"))), LWS),
    # A reference naming the right object with a stale UID.
    ((LWS, LEADER_STS, LEADER, WORKER_STS,
      _obj("v1", "Pod", "ci-group-0-1", "u-p", ("apps/v1", "StatefulSet", "ci-group-0", "u-old"))), LWS),
    # Another LeaderWorkerSet's chain.
    ((LWS, LEADER_STS, LEADER, WORKER_STS, WORKER), {**LWS, "metadata": {**LWS["metadata"], "uid": "u-other"}}),
])
async def test_a_pod_that_is_not_the_groups_is_a_conflict(objects, lws):
    with pytest.raises(SpecInvalid) as refused:
        await check_launcher_targets(FakeApi(*objects), ROLE, WORKLOAD, lws, "llm/ci")
    assert refused.value.reason == "ResourceConflict"
    assert str(refused.value).startswith("Pod llm/ci-group-0-1 already exists")
