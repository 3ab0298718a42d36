"""The API emulator's additions to kmock that the operator's correctness rests on."""

from __future__ import annotations

import pytest

from kiln.demo.sandbox import Sandbox

pytestmark = pytest.mark.emulator_only("tests the emulator itself")


async def test_a_list_returns_only_what_its_label_selector_selects():
    async with Sandbox() as sb:
        sb.add_namespace("llm")
        for name, labels in (("a-0", {"app": "a", "tier": "server"}), ("a-1", {"app": "a"}),
                             ("b-0", {"app": "b", "tier": "server"})):
            await sb.api.apply({"apiVersion": "v1", "kind": "Pod",
                                "metadata": {"name": name, "namespace": "llm", "labels": labels},
                                "spec": {"containers": [{"name": "c", "image": "i"}]}})

        async def names(selector):
            return sorted(p["metadata"]["name"] for p in await sb.api.list("v1", "Pod", "llm", selector))
        assert await names(None) == ["a-0", "a-1", "b-0"]
        assert await names("app=a") == ["a-0", "a-1"]
        assert await names("app=a,tier=server") == ["a-0"]
        assert await names("app==b") == ["b-0"]
        assert await names("app!=a") == ["b-0"]
        assert await names("tier") == ["a-0", "b-0"]
        assert await names("!tier") == ["a-1"]


async def test_removing_the_last_finalizer_of_a_deleted_object_deletes_it():
    async with Sandbox() as sb:
        sb.add_namespace("llm")
        service = {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "s", "namespace": "llm", "finalizers": ["example.com/hold"]},
                   "spec": {"ports": [{"port": 80}]}}
        await sb.api.apply(service)
        await sb.api.delete(service)
        assert sb.get("services", "s", "llm")["metadata"]["deletionTimestamp"]
        await sb.api._call("PATCH", "/api/v1/namespaces/llm/services/s", [
            {"op": "remove", "path": "/metadata/finalizers"}], content_type="application/json-patch+json")
        assert sb.get("services", "s", "llm") is None
        assert [t for t, o in sb.events("services")][-1] == "DELETED"
