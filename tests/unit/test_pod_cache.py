"""The timers read a service's serving pods from the watch-fed pod cache, not the API."""

import asyncio

from kiln.controller.cache import CachedKubeApi, slim_pod
from kiln.controller.metrics import _metrics_port, ready_pods
from kiln.render.meta import selector_string


def _pod(name, ready=True, ip="10.0.0.7", deleting=False):
    meta = {"name": name, "namespace": "llm", "uid": "u-" + name, "resourceVersion": "7",
            "labels": {"app.kubernetes.io/instance": "svc", "app.kubernetes.io/component": "server",
                       "app.kubernetes.io/managed-by": "kiln", "pod-template-hash": "abc"},
            "annotations": {"kiln.dev/engine-key": "k" * 64}, "managedFields": [{"manager": "x"}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "triton", "image": "nvcr.io/x", "args": ["--a"] * 50,
                                     "ports": [{"name": "http", "containerPort": 8000},
                                               {"name": "metrics", "containerPort": 8002}]}]},
            "status": {"phase": "Running", "podIP": ip, "hostIP": "10.1.0.1",
                       "conditions": [{"type": "PodScheduled", "status": "True"},
                                      {"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "triton", "ready": ready}]}}


class _Api:
    def __init__(self):
        self.lists = []

    async def list(self, api_version, kind, namespace=None, label_selector=None):
        self.lists.append((kind, namespace, label_selector))
        return [_pod("from-the-api")]


def test_a_slim_pod_keeps_what_choosing_a_scrape_target_reads_and_little_else():
    pods = [_pod("a"), _pod("b", ready=False), _pod("c", deleting=True), _pod("d", ip="")]
    slim = [slim_pod(pod) for pod in pods]
    assert [p["metadata"]["name"] for p in ready_pods(slim)] == \
        [p["metadata"]["name"] for p in ready_pods(pods)] == ["a"]
    assert _metrics_port(slim[0]) == _metrics_port(pods[0]) == 8002
    assert "managedFields" not in slim[0]["metadata"] and "args" not in str(slim[0])
    assert len(str(slim[0])) < len(str(pods[0])) / 2


def test_a_service_s_pods_come_from_the_cache_and_any_other_list_from_the_api():
    api = _Api()
    index = {("llm", "svc", "server"): [slim_pod(_pod("a"))]}
    cached = CachedKubeApi(api, {"kiln_cache_pods": index})

    async def lists():
        mine = await cached.list("v1", "Pod", "llm", selector_string("svc", "server"))
        none = await cached.list("v1", "Pod", "llm", selector_string("other", "server"))
        job = await cached.list("v1", "Pod", "llm", "job-name=build")
        wider = await cached.list("v1", "Pod", "llm", selector_string("svc", "server") + ",x=y")
        return mine, none, job, wider

    mine, none, job, wider = asyncio.run(lists())
    assert [p["metadata"]["name"] for p in mine] == ["a"] and none == []
    assert [p["metadata"]["name"] for p in job + wider] == ["from-the-api"] * 2
    assert api.lists == [("Pod", "llm", "job-name=build"),
                         ("Pod", "llm", selector_string("svc", "server") + ",x=y")]
    mine[0]["metadata"]["name"] = "changed"  # a copy: the cache is not the caller's to edit
    assert index[("llm", "svc", "server")][0]["metadata"]["name"] == "a"


def test_without_the_pod_cache_every_list_goes_to_the_api():
    api = _Api()
    asyncio.run(CachedKubeApi(api, {}).list("v1", "Pod", "llm", selector_string("svc", "server")))
    assert api.lists == [("Pod", "llm", selector_string("svc", "server"))]
