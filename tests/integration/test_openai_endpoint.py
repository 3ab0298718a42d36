"""The OpenAI-compatible endpoint end to end: the operator reports
``status.endpoints.openai``; the OpenAI Python client, pointed at that in-cluster URL, is
answered through the rendered Service by a simulated serving pod (streamed and whole)."""

from __future__ import annotations

import asyncio
import copy

import openai
import pytest
import yaml

from kiln.decide.conditions import is_true
from kiln.demo.network import ServiceNotReachable, resolve
from kiln.demo.openai_act import PROMPT, chat_round_trip, openai_act
from kiln_runtime.smoke import smoke_openai

from ..conftest import ROOT

NS = "llm"
LLAMA = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8.yaml").read_text())


def _serving_pod(sb):
    """The one serving Pod (on a real server the build Job's Pod is listed too)."""
    [pod] = [p for p in sb.objects("pods")
             if p["metadata"]["labels"].get("app.kubernetes.io/component") == "server"]
    port = next(p["containerPort"] for p in pod["spec"]["containers"][0]["ports"] if p["name"] == "openai")
    return pod["status"]["podIP"], port


@pytest.fixture
async def ready_llama(make_sandbox):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "simulated"})
        await sb.start_operator()
        sb.start_kubelet()
        manifest = copy.deepcopy(LLAMA)
        manifest["spec"]["servedModelName"] = "llama-3.1-8b-instruct"
        await sb.create(manifest)

        def ready():
            svc = sb.get("llmservices", "llama-8b", NS)
            conditions = ((svc or {}).get("status") or {}).get("conditions", [])
            return svc if is_true(conditions, "Ready") else None
        service = await sb.wait_for(ready, what="llama-8b Ready")
        yield sb, service
        await sb.stop_operator()
        await sb.stop_kubelet()


async def test_openai_client_is_answered_through_the_status_url(backend, ready_llama):
    sb, service = ready_llama
    url = service["status"]["endpoints"]["openai"]
    assert url == f"http://llama-8b-server.{sb.ns(NS)}.svc:9000/v1"
    model = "llama-3.1-8b-instruct"

    text, usage, chunks = await chat_round_trip(sb.api, url, model, stream=True)
    assert "simulated" in text.lower() and PROMPT in text
    assert chunks > 3  # role chunk, one per token, finish chunk, usage chunk
    assert usage.completion_tokens == len(text.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    whole, usage_whole, _ = await chat_round_trip(sb.api, url, model, stream=False)
    assert whole == text and usage_whole.total_tokens == usage.total_tokens

    # The served model name is the API's model; another name is refused.
    with pytest.raises(openai.BadRequestError, match="Unknown model"):
        await chat_round_trip(sb.api, url, "llama-8b", stream=False)


async def test_the_route_is_the_rendered_service(backend, ready_llama):
    sb, service = ready_llama
    assert await resolve(sb.api, f"llama-8b-server.{sb.ns(NS)}.svc", 9000) == _serving_pod(sb)
    with pytest.raises(ServiceNotReachable, match="no port 9999"):
        await resolve(sb.api, f"llama-8b-server.{sb.ns(NS)}.svc", 9999)
    with pytest.raises(ServiceNotReachable, match="does not exist"):
        await resolve(sb.api, f"nothing-server.{sb.ns(NS)}.svc", 9000)


async def test_the_demo_act_and_the_startup_probe(backend, ready_llama):
    sb, _ = ready_llama
    lines: list[str] = []
    assert await openai_act(sb.api, sb.objects("llmservices"), lines.append)
    text = "\n".join(lines)
    assert "simulated" in text and "streamed chunks" in text and "usage:" in text
    # The startup probe's request (kiln-runtime smoke --openai-url) against the same pod.
    ip, port = _serving_pod(sb)
    reply = await asyncio.to_thread(smoke_openai, f"http://{ip}:{port}/v1",
                                    "llama-3.1-8b-instruct", "The capital of France is", 4)
    assert len(reply.split()) == 4
