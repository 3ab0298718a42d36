"""A simulated OpenAI-compatible endpoint for the demo's serving pods. No model runs.

It speaks the wire format of Triton's OpenAI frontend (triton-inference-server/server
``python/openai/openai_frontend``), which is the OpenAI API's: ``GET /v1/models``,
``POST /v1/chat/completions`` and ``POST /v1/completions``, answered whole or streamed as
server-sent events (a first chunk that sets the role, one chunk per token, a last chunk with
the finish reason, a usage chunk with no choices when ``stream_options.include_usage`` is
set, then ``data: [DONE]``; ``engine/triton_engine.py``: ``_streaming_chat_iterator``), and
``GET /health/ready``. The reply is deterministic and says that it is simulated; a "token"
is a whitespace-separated word.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import aiohttp.web

__all__ = ["add_openai_routes", "SIMULATED_OWNER"]

SIMULATED_OWNER = "Triton Inference Server (simulated)"


def _error(status: int, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": status}},
        status=status)


def _words(text: str) -> list[str]:
    return text.split()


def _reply(model: str, prompt: str, max_tokens: int) -> tuple[list[str], str]:
    words = _words(f"Simulated reply from {model} (no model runs here). You said: {prompt}")
    tokens = words[:max_tokens]
    return [w if i == 0 else f" {w}" for i, w in enumerate(tokens)], (
        "length" if len(words) > max_tokens else "stop")


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def add_openai_routes(app: aiohttp.web.Application, model: str) -> None:
    """Serve the OpenAI API for ``model`` (the served model name) on ``app``."""
    created = int(time.time())

    async def models(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"object": "list", "data": [
            {"id": model, "object": "model", "created": created, "owned_by": SIMULATED_OWNER}]})

    async def ready(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(status=200)

    async def body_of(request: aiohttp.web.Request) -> dict[str, Any] | aiohttp.web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body is not a JSON object")
        if body.get("model") != model:
            return _error(400, f"Unknown model: {body.get('model')!r}; this endpoint serves {model!r}")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return _error(400, "max_tokens must be a positive integer")
        body["max_tokens"] = max_tokens
        return body

    async def stream(request: aiohttp.web.Request, chunks: list[dict[str, Any]]
                     ) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def chat(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        body = await body_of(request)
        if isinstance(body, aiohttp.web.Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) for m in messages):
            return _error(400, "messages must be a non-empty list of messages")
        last = _message_text(messages[-1].get("content"))
        prompt_tokens = sum(len(_words(_message_text(m.get("content")))) for m in messages)
        tokens, finish = _reply(model, last, body["max_tokens"])
        usage = _usage(prompt_tokens, len(tokens))
        request_id, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": request_id, "created": now, "model": model, "system_fingerprint": None}
        if not body.get("stream"):
            return aiohttp.web.json_response({**head, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                 "logprobs": None, "finish_reason": finish}], "usage": usage})
        chunk = {**head, "object": "chat.completion.chunk"}

        def choice(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            return {**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": reason}]}

        chunks = [choice({"role": "assistant", "content": ""})]
        chunks += [choice({"content": token}) for token in tokens]
        chunks.append(choice({"content": ""}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**chunk, "choices": [], "usage": usage})
        return await stream(request, chunks)

    async def completions(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        body = await body_of(request)
        if isinstance(body, aiohttp.web.Response):
            return body
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return _error(400, "prompt must be a string")
        tokens, finish = _reply(model, prompt, body["max_tokens"])
        usage = _usage(len(_words(prompt)), len(tokens))
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": model, "system_fingerprint": None}
        if not body.get("stream"):
            return aiohttp.web.json_response({**head, "choices": [
                {"index": 0, "text": "".join(tokens), "logprobs": None, "finish_reason": finish}],
                "usage": usage})
        chunks = [{**head, "choices": [{"index": 0, "text": token, "logprobs": None,
                                        "finish_reason": None}]} for token in tokens]
        chunks.append({**head, "choices": [{"index": 0, "text": "", "logprobs": None,
                                            "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**head, "choices": [], "usage": usage})
        return await stream(request, chunks)

    app.router.add_get("/v1/models", models)
    app.router.add_get("/health/ready", ready)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
