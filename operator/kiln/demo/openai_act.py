"""The demo's OpenAI round trip: the OpenAI Python client, pointed at the in-cluster URL a
service's ``status.endpoints.openai`` gives, streams one chat completion through the
rendered Service (:mod:`kiln.demo.network`) from a simulated serving pod
(:mod:`kiln.demo.openai_sim`). The client code is what a user runs against a cluster."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from ..controller.kube import KubeApi
from .network import cluster_http_client

__all__ = ["chat_round_trip", "openai_act", "PROMPT"]

PROMPT = "Say hello to the platform team."


async def chat_round_trip(api: KubeApi, base_url: str, model: str,
                          stream: bool = True) -> tuple[str, Any, int]:
    """One chat completion; returns (text, usage, chunks received)."""
    import openai

    async with openai.AsyncOpenAI(base_url=base_url, api_key="not-needed-in-cluster",
                                  http_client=cluster_http_client(api), max_retries=0) as client:
        messages: list[Any] = [{"role": "user", "content": PROMPT}]
        if not stream:
            reply = await client.chat.completions.create(model=model, messages=messages,
                                                         max_tokens=32)
            return reply.choices[0].message.content or "", reply.usage, 1
        pieces, usage, chunks = [], None, 0
        events = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=32, stream=True,
            stream_options={"include_usage": True})
        async for chunk in events:
            chunks += 1
            usage = chunk.usage or usage
            pieces += [choice.delta.content or "" for choice in chunk.choices]
        return "".join(pieces), usage, chunks


def _pick(services: list[dict[str, Any]], preferred: str) -> dict[str, Any] | None:
    with_url = [s for s in services if ((s.get("status") or {}).get("endpoints") or {}).get("openai")]
    return next((s for s in with_url if s["metadata"]["name"] == preferred),
                with_url[0] if with_url else None)


async def openai_act(api: KubeApi, services: list[dict[str, Any]], say: Callable[[str], None],
                     preferred: str = "llama-8b") -> bool:
    """Print one streamed chat completion against an example service; False if it failed."""
    service = _pick(services, preferred)
    if service is None:
        say("\n(no OpenAI round trip: no service reports status.endpoints.openai)")
        return False
    import openai

    name = service["metadata"]["name"]
    url = service["status"]["endpoints"]["openai"]
    model = (service.get("spec") or {}).get("servedModelName") or name
    say(f"\nOpenAI API of llmservice/{name} (status.endpoints.openai) via its Service; simulated "
        "server:")
    say(f'  client = openai.AsyncOpenAI(base_url="{url}")')
    say(f'  client.chat.completions.create(model="{model}", stream=True,\n'
        f'      messages=[{{"role": "user", "content": "{PROMPT}"}}])')
    try:
        text, usage, chunks = await chat_round_trip(api, url, model)
    except openai.OpenAIError as error:
        say(f"  failed: {type(error).__name__}: {error}")
        return False
    say("  " + textwrap.shorten(f"{chunks} streamed chunks: {text!r}", width=98, placeholder=" ...'"))
    if usage is not None:
        say(f"  usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion = "
            f"{usage.total_tokens} tokens")
    return bool(text) and usage is not None
