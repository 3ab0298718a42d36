"""Services and the engine sweep writing one LLMEngine record at the same moment.

Each case stops the operator and runs the steps of the reconciles (gather, decide, execute)
and of the sweep itself, in the order that made the race, against the API server: the
interleaving is chosen, the writes and their preconditions are the real ones.
"""

from __future__ import annotations

import copy
import datetime

import pytest
import yaml

from kiln.controller.collect import sweep_engines
from kiln.controller.execute import execute
from kiln.controller.gather import gather
from kiln.controller.kube import KINDS, ApiException
from kiln.controller.models import ModelResolver
from kiln.decide import decide
from kiln.decide.conditions import get_condition, is_true
from kiln.decide.policy import Policy

from ..conftest import ROOT

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
LONG_AGO = "2000-01-01T00:00:00Z"


def _named(sb, name):
    manifest = copy.deepcopy(MISTRAL)
    manifest["metadata"] = {"name": name, "namespace": sb.ns(NS)}
    return manifest


def _now():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _engine_of(sb, name):
    return (((sb.get("llmservices", name, NS) or {}).get("status") or {}).get("engine") or {}).get("name")


async def _decided(sb, name, policy=None):
    """One reconcile of service ``name`` up to its writes: the body it read and the actions."""
    body = sb.get("llmservices", name, NS)
    snapshot = await gather(body, sb.api, ModelResolver(allow_download=False), _now(), policy or Policy())
    return body, decide(snapshot)


async def _execute(sb, body, actions):
    return await execute(actions, sb.api, body.get("status") or {}, _now(), body["metadata"].get("generation"))


async def test_a_build_two_services_saw_end_is_told_by_one_of_them(make_sandbox):
    """Two services on one engine both read its build Job Complete and the record not yet
    Ready. Both decide to mark it Ready and to say BuildSucceeded; only the write that lands
    on the record as read is made, and only its service tells of the build (one Event, one
    count, one duration), as only the service whose create started a build says BuildStarted."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()  # no kubelet yet: the build stays running
        await sb.create(_named(sb, "a"))
        await sb.create(_named(sb, "b"))
        await sb.wait_for(lambda: _engine_of(sb, "a") and _engine_of(sb, "b") and sb.objects("jobs"),
                          what="both services waiting on one build")
        await sb.stop_operator()
        sb.start_kubelet()
        await sb.wait_for(lambda: any(c.get("type") == "Complete" and c.get("status") == "True"
                                      for c in (sb.objects("jobs")[0].get("status") or {}).get("conditions") or []),
                          what="the build Job Complete")

        (body_a, a), (body_b, b) = await _decided(sb, "a"), await _decided(sb, "b")
        assert [reason for _, reason, _ in a.finished] == [reason for _, reason, _ in b.finished] == ["BuildSucceeded"]
        await _execute(sb, body_a, a)
        await _execute(sb, body_b, b)
        told = [actions for actions in (a, b) if any(reason == "BuildSucceeded" for _, reason, _ in actions.events)]
        assert told == [a] and a.build_seconds is not None and b.build_seconds is None
        engine = sb.get("llmengines", _engine_of(sb, "a"))
        assert is_true(engine["status"]["conditions"], "Ready")
        # b applied its children all the same: the engine is built.
        assert sb.get("deployments", "b-server", NS) is not None


async def _a_ready(sb):
    """Service "a" made Ready on its engine (the operator and the kubelet running); the
    engine's name."""
    sb.add_namespace(NS)
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(_named(sb, "a"))
    await sb.wait_for(lambda: is_true(((sb.get("llmservices", "a", NS) or {}).get("status") or {})
                                      .get("conditions") or [], "Ready"), what="a Ready")
    return _engine_of(sb, "a")


async def _an_engine_nobody_references_since_long_ago(sb):
    """Service "a" Ready on its engine, then deleted; its engine's record and finished build
    Job kept, the record marked unreferenced long ago. The record, and service "b" created
    for the same engine with the operator stopped (no status yet: a sweep now finds no
    service that references it)."""
    name = await _a_ready(sb)
    # Its finished build Job stays (a week, its TTL), as when a service moves to another
    # engine rather than going: here it is let go of before a is deleted.
    await sb.api.request("PATCH", KINDS[("batch/v1", "Job")].path(sb.ns(NS), name + "-build"),
                         {"metadata": {"ownerReferences": None}}, content_type="application/merge-patch+json")
    await sb.api.delete(sb.get("llmservices", "a", NS))
    await sb.wait_for(lambda: sb.get("llmservices", "a", NS) is None, what="a deleted")
    await sb.stop_operator()
    await sb.stop_kubelet()
    engine = await sb.api.patch_status(sb.get("llmengines", name), {"unreferencedSince": LONG_AGO})
    await sb.create(_named(sb, "b"))
    return engine


class _SweepThatListedFirst:
    """The sweep's API, through which service "b" executes its reconcile just before the
    sweep's delete of the LLMEngine it listed: b's unmarking lands in between."""

    def __init__(self, api, between):
        self._api, self._between = api, between

    async def delete(self, obj, **options):
        if obj["kind"] == "LLMEngine":
            await self._between()
        return await self._api.delete(obj, **options)

    def __getattr__(self, attribute):
        return getattr(self._api, attribute)


async def test_an_engine_a_service_takes_up_again_is_not_swept_from_under_it(make_sandbox):
    """The sweep listed the services (b had no status yet) and the engines (the record
    unreferenced for longer than the grace period); b then read the record, Ready, and
    went on to serve from it. The sweep's delete is of the record as it listed it: b
    unmarked it first, so the delete is refused and the record, the files and b's
    Deployment stay."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        engine = await _an_engine_nobody_references_since_long_ago(sb)
        name = engine["metadata"]["name"]
        body, actions = await _decided(sb, "b")
        assert actions.engine_status == {"unreferencedSince": None}
        assert actions.engine_version == engine["metadata"]["resourceVersion"]

        async def b_executes():
            await _execute(sb, body, actions)
        swept = await sweep_engines(_SweepThatListedFirst(sb.api, b_executes), sb.ns(NS), _now(),
                                    grace=0.0, delete_files=True)
        assert swept == []
        kept = sb.get("llmengines", name)
        assert kept is not None and not kept["status"].get("unreferencedSince")
        assert sb.get("deployments", "b-server", NS) is not None
        assert [j["metadata"]["name"] for j in sb.objects("jobs")] == [name + "-build"]


async def test_a_service_that_read_an_engine_the_sweep_then_deleted_uses_nothing_and_waits_for_the_purge(
        make_sandbox):
    """b read the record just before the sweep deleted it (and, opted in, started the Job
    that removes its files). b's unmarking fails on the deleted record: nothing of b is
    applied. Its next reconcile makes the record again and waits for the purge Job before it
    builds: a build started beside it would find the files still there and be told it was
    done, and b would serve an engine whose files were being removed."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        engine = await _an_engine_nobody_references_since_long_ago(sb)
        name = engine["metadata"]["name"]
        body, actions = await _decided(sb, "b")
        assert await sweep_engines(sb.api, sb.ns(NS), _now(), grace=0.0, delete_files=True) == [name]
        # The finished build Job went with the record: read Complete, it would say the engine
        # is built while the purge removes its files.
        await sb.wait_for(lambda: [j["metadata"]["name"] for j in sb.objects("jobs")] == [name + "-purge"],
                          what="the build Job deleted, the purge Job made")
        with pytest.raises(ApiException) as refused:
            await _execute(sb, body, actions)
        assert refused.value.status == 404
        assert sb.get("deployments", "b-server", NS) is None

        body, actions = await _decided(sb, "b")  # no kubelet: the purge Job runs on
        assert actions.build_job is None and actions.requeue is not None
        ready = get_condition([c.model_dump(by_alias=True) for c in actions.status.conditions], "EngineReady")
        assert ready["status"] == "False" and f"Job {sb.ns(NS)}/{name}-purge is removing" in ready["message"]
        await _execute(sb, body, actions)
        assert sb.get("llmengines", name) is not None  # the record made again
        assert [j["metadata"]["name"] for j in sb.objects("jobs")] == [name + "-purge"]


async def test_a_record_changed_since_it_was_read_is_not_deleted(make_sandbox):
    """KubeApi.delete(unchanged=True) carries the resourceVersion it read: the API server
    refuses it (409) once the object was written since, and the call says so."""
    async with make_sandbox() as sb:
        sb.add_namespace(NS)
        made = await sb.api.apply({"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "read", "namespace": sb.ns(NS)}, "data": {"a": "1"}})
        await sb.api.apply({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "read", "namespace": sb.ns(NS)}, "data": {"a": "2"}})
        assert await sb.api.delete(made, unchanged=True) is False
        assert sb.get("configmaps", "read", NS) is not None
        assert await sb.api.delete(sb.get("configmaps", "read", NS), unchanged=True) is True
        assert sb.get("configmaps", "read", NS) is None


async def test_the_files_another_record_names_are_not_purged_with_an_unreferenced_record(make_sandbox):
    """Two records of one key: as after the upgrade that lengthened LLMEngine names, when every
    service made its engine's record under the new name and its build found the entry already
    in the cache. The old record, unreferenced for longer than the grace period, is deleted;
    the entry is the new record's too, and no purge Job is started for it."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        current = sb.get("llmengines", await _a_ready(sb))
        await sb.stop_operator()
        old_name = current["metadata"]["name"][:-10]  # the shorter name of before
        old = await sb.api.apply({"apiVersion": current["apiVersion"], "kind": "LLMEngine", "metadata": {
            "name": old_name, "labels": current["metadata"]["labels"]}, "spec": current["spec"]})
        await sb.api.patch_status(old, {"unreferencedSince": LONG_AGO})

        swept = await sweep_engines(sb.api, sb.ns(NS), _now(), grace=0.0, delete_files=True)
        assert swept == [old_name]
        assert [j for j in sb.objects("jobs") if j["metadata"]["name"].endswith("-purge")] == []
        assert sb.get("llmengines", current["metadata"]["name"]) is not None
