"""GET /v1/models through a Gateway: the lists the operator keeps, and the server that answers them."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kiln.cli import parser, run_policy
from kiln.controller.kube import ApiException
from kiln.controller.modellist import ModelListWriter
from kiln.errors import SpecInvalid
from kiln.modellist import (MAX_DATA_BYTES, MAX_FILE_BYTES, MAX_LISTED, MODEL_LIST_HEADER, configmap, gateway_key, gateway_lists,
                            list_document, model_list_app)

T1, T2 = "2026-12-01T10:00:00Z", "2026-12-02T10:00:00Z"


def test_a_gateway_lists_each_routed_name_once_with_its_earliest_route():
    lists = gateway_lists([("gw/public", "llama", T2), ("gw/public", "llama", T1), ("gw/public", "mistral", T2),
                           ("gw/public", "waiting", None), ("other/internal", "qwen", T1),
                           ("tenant/made-up", "squatter", T1)], ["gw/public", "other/internal", "gw/empty"])
    # A Gateway the platform team did not list is not kept, whatever a tenant's spec names.
    assert list(lists) == ["gw/empty", "gw/public", "other/internal"] and lists["gw/empty"] == []
    assert lists["gw/public"] == [
        {"id": "llama", "object": "model", "created": 1796119200, "owned_by": "Triton Inference Server"},
        {"id": "mistral", "object": "model", "created": 1796205600, "owned_by": "Triton Inference Server"}]
    assert [e["id"] for e in lists["other/internal"]] == ["qwen"]


def test_a_timestamp_that_is_no_time_reads_as_zero():
    [entry] = gateway_lists([("gw/public", "llama", "2026-13-45T99:99:99Z")], ["gw/public"])["gw/public"]
    assert entry["created"] == 0


def test_the_list_is_bounded():
    lists = gateway_lists([("gw/public", f"m{i:05d}", T1) for i in range(MAX_LISTED + 10)], ["gw/public"])
    assert len(lists["gw/public"]) == MAX_LISTED
    document = configmap("kiln-model-list", "kiln-system", lists)
    assert len(document["data"]["gw_public.json"]) < MAX_FILE_BYTES
    # Sixty-four full lists would not fit a ConfigMap: each is cut alike until they do.
    many = [f"gw/public-{g}" for g in range(64)]
    lists = gateway_lists([(gateway, f"model-name-of-some-length-{i:05d}", T1) for gateway in many
                           for i in range(MAX_LISTED)], many)
    data = configmap("kiln-model-list", "kiln-system", lists)["data"]
    assert len(data) == 64 and sum(len(k) + len(v) for k, v in data.items()) <= MAX_DATA_BYTES
    assert len({len(json.loads(v)["data"]) for v in data.values()}) == 1


@pytest.mark.parametrize("gateway", ["../etc/passwd", "gw/../../x", "a/b/c", "GW/public", "gw/", "/gw", "gw_x/y",
                                     "gw/" + "a" * 320, "", "gw\\public", "gw/pub lic",
                                     # a Gateway's namespace is at most 63 characters, its name 253
                                     "a" * 64 + "/gw", "gw/" + "b" * 254])
def test_only_a_namespace_and_name_make_a_key(gateway):
    assert gateway_key(gateway) is None
    assert gateway_lists([(gateway, "llama", T1)], [gateway]) == {}


def test_the_configmap_has_a_key_per_gateway():
    document = configmap("kiln-model-list", "kiln-system", gateway_lists([("gw/public.v2", "llama", T1)], ["gw/public.v2"]))
    assert document["metadata"] == {"name": "kiln-model-list", "namespace": "kiln-system", "labels": {
        "app.kubernetes.io/name": "kiln", "app.kubernetes.io/component": "model-list",
        "app.kubernetes.io/managed-by": "kiln"}}
    assert json.loads(document["data"]["gw_public.v2.json"]) == {
        "object": "list", "data": [{"id": "llama", "object": "model", "created": 1796119200,
                                    "owned_by": "Triton Inference Server"}]}


async def _get(directory, headers):
    async with TestClient(TestServer(model_list_app(directory))) as client:
        response = await client.get("/v1/models", headers=headers)
        assert response.status == 200
        return await response.json()


async def test_the_server_answers_the_list_of_the_gateway_its_route_names(tmp_path):
    (tmp_path / "gw_public.json").write_text(list_document(gateway_lists([("gw/public", "llama", T1)], ["gw/public"])["gw/public"]))
    assert [m["id"] for m in (await _get(tmp_path, {MODEL_LIST_HEADER: "gw/public"}))["data"]] == ["llama"]
    # A Gateway with nothing routed, or none named: an empty list, as OpenAI's shape has it.
    assert await _get(tmp_path, {MODEL_LIST_HEADER: "gw/other"}) == {"object": "list", "data": []}
    assert await _get(tmp_path, {}) == {"object": "list", "data": []}


async def test_a_hostile_header_reads_no_other_file(tmp_path):
    (tmp_path / "secret").write_text('{"object": "list", "data": [{"id": "leaked"}]}')
    (tmp_path / "gw").mkdir()
    (tmp_path / "gw" / "x.json").write_text('{"object": "list", "data": [{"id": "leaked"}]}')
    (tmp_path / "gw" / "gw_dir.json").mkdir()  # a directory where a list would be
    for header in ("../secret", "secret", "gw/x.json/../../secret", "gw/../secret", "gw/x", "x" * 5000, "gw/dir"):
        assert await _get(tmp_path / "gw", {MODEL_LIST_HEADER: header}) == {"object": "list", "data": []}, header


async def test_a_file_over_a_configmaps_size_is_not_served(tmp_path):
    (tmp_path / "gw_public.json").write_bytes(b" " * (MAX_FILE_BYTES + 1))
    assert await _get(tmp_path, {MODEL_LIST_HEADER: "gw/public"}) == {"object": "list", "data": []}


class _Api:
    def __init__(self, failures=0):
        self.applied, self.failures = [], failures

    async def apply(self, obj):
        if self.failures:
            self.failures -= 1
            raise ApiException(status=503, reason="unavailable")
        self.applied.append(obj)
        return obj


async def _settled(writer):
    while writer._task is not None and not writer._task.done():
        await asyncio.sleep(0.01)


async def test_the_writer_applies_a_changed_list_once_and_an_unchanged_one_never():
    api = _Api()
    writer = ModelListWriter(api, "kiln-system/kiln-model-list", ("gw/public",), delay=0.01)
    writer.update("a", frozenset({("gw/public", "llama", T1)}))
    writer.update("b", frozenset({("gw/public", "mistral", T2), ("gw/public", "qwen", None)}))
    await _settled(writer)
    assert len(api.applied) == 1  # both changes in one write
    assert [m["id"] for m in json.loads(api.applied[0]["data"]["gw_public.json"])["data"]] == ["llama", "mistral"]
    writer.update("b", frozenset({("gw/public", "mistral", T2)}))  # the same list
    await _settled(writer)
    assert len(api.applied) == 1
    writer.update("a", frozenset())  # deleted
    writer.update("b", frozenset())
    await _settled(writer)
    assert json.loads(api.applied[-1]["data"]["gw_public.json"])["data"] == []  # nothing routed: empty


async def test_a_failed_write_is_tried_again():
    api = _Api(failures=2)
    writer = ModelListWriter(api, "kiln-system/kiln-model-list", ("gw/public",), delay=0.01, retry=0.01)
    writer.update("a", frozenset({("gw/public", "llama", T1)}))
    await _settled(writer)
    assert len(api.applied) == 1 and api.failures == 0


def test_the_flags_name_a_configmap_and_the_gateways():
    args = parser().parse_args(["run", "--model-list-configmap", "kiln-system/kiln-model-list",
                                "--model-list-gateway", "gw/public", "--model-list-gateway", "gw/public"])
    policy = run_policy(args)
    assert (policy.model_list, policy.model_list_gateways) == ("kiln-system/kiln-model-list", ("gw/public",))
    assert run_policy(parser().parse_args(["run"])).model_list is None
    for alone in (["--model-list-configmap", "kiln-system/kiln-model-list"], ["--model-list-gateway", "gw/public"]):
        with pytest.raises(SpecInvalid, match="go together"):
            run_policy(parser().parse_args(["run", *alone]))
    for bad in ("kiln-model-list", "a/b/c", "../x", "Kiln/x"):
        with pytest.raises(SystemExit):
            parser().parse_args(["run", "--model-list-configmap", bad])


def test_kiln_model_list_serves_the_directory_and_refuses_a_missing_one(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    missing = subprocess.run([sys.executable, "-m", "kiln", "model-list", "--dir", str(tmp_path / "none")],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("error: --dir:") and "Traceback" not in missing.stderr
    (tmp_path / "gw_public.json").write_text(list_document(gateway_lists([("gw/public", "llama", T1)], ["gw/public"])["gw/public"]))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "kiln", "model-list", "--dir", str(tmp_path), "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={MODEL_LIST_HEADER: "gw/public"})
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert [m["id"] for m in json.loads(response.read())["data"]] == ["llama"]
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.1)
        # It says where it listens (its first line, before any request).
        assert server.stderr.readline().decode().startswith(f"kiln model-list: GET /v1/models on port {port}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()
