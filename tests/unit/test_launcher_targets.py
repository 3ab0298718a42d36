"""The multi-node leader execs only into its own group's workers.

The launcher Role names pods, and RBAC matches names only: a pod someone else made under a
worker's name (a StatefulSet ``<leader pod>`` of their own, a bare pod) is covered too. The
leader reads each target first and refuses unless it is a worker LWS made for this group:
its LWS labels, and its controller a StatefulSet named after the leader pod whose own
controller is this leader pod (by UID).

kubectl is faked: ``get pod|statefulset NAME -o json`` answers from a table, ``exec`` is
recorded, so each test sees which execs would have happened.
"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from kiln_runtime import group as group_mod
from kiln_runtime.errors import StepFailed
from kiln_runtime.group import Group, wait_for_workers

NS = "llm"
LWS = "svc-group"
LEADER = f"{LWS}-0"
LEADER_UID = "uid-leader-pod"
NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
GROUP_LABEL = "leaderworkerset.sigs.k8s.io/group-index"


def _pod(name, labels, controller):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": labels,
                         "ownerReferences": [controller] if controller else []}}


def _ref(kind, name, uid, api_version="apps/v1"):
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True}


def _lws_worker(name=f"{LEADER}-1"):
    return _pod(name, {NAME_LABEL: LWS, GROUP_LABEL: "0"}, _ref("StatefulSet", LEADER, "uid-sts"))


def _worker_sts(owner_uid=LEADER_UID):
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": LEADER, "namespace": NS, "uid": "uid-sts",
                         "ownerReferences": [_ref("Pod", LEADER, owner_uid, "v1")]}}


class FakeKubectl:
    def __init__(self, objects):
        self.objects = {(o["kind"].lower(), o["metadata"]["name"]): o for o in objects}
        self.execs: list[str] = []

    def __call__(self, argv, **_kwargs):
        if "exec" in argv:
            self.execs.append(argv[argv.index("exec") + 3])
            return subprocess.CompletedProcess(argv, 0, "", "")
        kind, name = argv[argv.index("get") + 1], argv[argv.index("get") + 2]
        found = self.objects.get((kind, name))
        if found is None:
            return subprocess.CompletedProcess(argv, 1, "", f'{kind}s "{name}" not found')
        return subprocess.CompletedProcess(argv, 0, json.dumps(found), "")


@pytest.fixture
def leader_env(monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", NS)
    monkeypatch.setenv("POD_UID", LEADER_UID)
    monkeypatch.setenv("LWS_NAME", LWS)
    monkeypatch.setenv("LWS_GROUP_INDEX", "0")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [])


def _run(monkeypatch, objects):
    fake = FakeKubectl(objects)
    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(group_mod.subprocess, "run", fake)
    group = Group(f"{LEADER}.{LWS}.{NS}", 2, 8)
    return fake, group


def test_the_leader_execs_into_its_own_groups_worker(monkeypatch, leader_env):
    fake, group = _run(monkeypatch, [_lws_worker(), _worker_sts()])
    wait_for_workers(group, timeout=1, poll=0)
    assert fake.execs == [f"{LEADER}-1"]


@pytest.mark.parametrize("why, objects", [
    ("a bare pod under the worker's name",
     [_pod(f"{LEADER}-1", {}, None)]),
    ("a pod copying the LWS labels, controlled by a StatefulSet of another name",
     [_pod(f"{LEADER}-1", {NAME_LABEL: LWS, GROUP_LABEL: "0"}, _ref("StatefulSet", "theirs", "x")),
      _worker_sts()]),
    ("a StatefulSet named like the leader pod that is not the leader pod's",
     [_lws_worker(), _worker_sts(owner_uid="uid-someone-else")]),
    ("a worker of another group",
     [_pod(f"{LEADER}-1", {NAME_LABEL: LWS, GROUP_LABEL: "1"}, _ref("StatefulSet", LEADER, "uid-sts")),
      _worker_sts()]),
    ("a worker whose StatefulSet is not the one its reference names (UID)",
     [_pod(f"{LEADER}-1", {NAME_LABEL: LWS, GROUP_LABEL: "0"}, _ref("StatefulSet", LEADER, "uid-old")),
      _worker_sts()]),
])
def test_the_leader_refuses_to_exec_into_a_pod_that_is_not_its_worker(monkeypatch, leader_env,
                                                                     why, objects):
    fake, group = _run(monkeypatch, objects)
    with pytest.raises(StepFailed) as refused:
        wait_for_workers(group, timeout=1, poll=0)
    assert fake.execs == [], why
    message = str(refused.value)
    assert f"pod {NS}/{LEADER}-1" in message and "\n" not in message


def test_mpiruns_remote_launcher_checks_the_pod_too(monkeypatch, leader_env):
    fake, _ = _run(monkeypatch, [_pod(f"{LEADER}-1", {}, None)])
    from kiln_runtime import cli
    execs = []
    monkeypatch.setattr(cli.os, "execvp", lambda *argv: execs.append(argv))
    assert cli.main(["rsh", f"{LEADER}-1.{LWS}.{NS}", "orted", "--daemonize"]) == 1
    assert execs == []
