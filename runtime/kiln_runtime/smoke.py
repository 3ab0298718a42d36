"""``kiln-runtime smoke``: one short generation through Triton, with tritonclient, or through
the OpenAI-compatible endpoint (``--openai-url``, the serving pods' startup probe).

Used as the serving container's startup gate (a replica is Ready only when it can
generate), and by hand: ``kiln-runtime smoke --url localhost:8001``. It talks to the
``ensemble`` model (text in, text out). The ensemble is decoupled when streaming is on, so
the request goes over gRPC streaming, which works for both.
"""

from __future__ import annotations

import queue
from typing import Any

__all__ = ["smoke", "smoke_openai", "build_inputs"]


def build_inputs(grpcclient: Any, prompt: str, max_tokens: int) -> list[Any]:
    import numpy as np

    def tensor(name: str, value: Any, dtype: str) -> Any:
        array = np.array([[value]], dtype=object if dtype == "BYTES" else None)
        if dtype == "INT32":
            array = array.astype(np.int32)
        elif dtype == "BOOL":
            array = array.astype(bool)
        item = grpcclient.InferInput(name, list(array.shape), dtype)
        item.set_data_from_numpy(array)
        return item

    return [tensor("text_input", prompt.encode(), "BYTES"),
            tensor("max_tokens", max_tokens, "INT32"),
            tensor("stream", True, "BOOL")]


def smoke(url: str, prompt: str = "The capital of France is", max_tokens: int = 8,
          timeout: float = 60.0, model: str = "ensemble") -> str:
    """Generate; return the text. Raises RuntimeError when nothing comes back."""
    import tritonclient.grpc as grpcclient

    results: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(url=url)
    try:
        client.start_stream(callback=lambda result, error: results.put(error or result))
        client.async_stream_infer(model, build_inputs(grpcclient, prompt, max_tokens),
                                  enable_empty_final_response=True)
        pieces: list[str] = []
        while True:
            try:
                item = results.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"no response from {model} at {url} within {timeout:.0f}s") from None
            if isinstance(item, Exception):
                raise RuntimeError(f"{model} at {url}: {item}")
            output = item.as_numpy("text_output")
            if output is not None and output.size:
                pieces.append(output.reshape(-1)[0].decode(errors="replace"))
            final = item.get_response().parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                break
        text = "".join(pieces)
        if not text.strip():
            raise RuntimeError(f"{model} at {url} returned no tokens")
        return text
    finally:
        client.stop_stream()
        client.close()


def smoke_openai(base_url: str, model: str, prompt: str = "The capital of France is",
                 max_tokens: int = 8, timeout: float = 60.0) -> str:
    """One streamed ``/v1/completions`` request through the OpenAI endpoint; return the text.

    A completion rather than a chat: it needs no chat template, so it gates base models too.
    Raises RuntimeError when nothing comes back.
    """
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "stream": True}).encode()
    request = urllib.request.Request(f"{base_url.rstrip('/')}/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    pieces: list[str] = []
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            for raw in response:  # server-sent events: "data: {...}" lines, then "data: [DONE]"
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    break
                for choice in json.loads(data).get("choices") or []:
                    pieces.append(choice.get("text") or "")
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{model} at {base_url}: HTTP {error.code} "
                           f"{error.read().decode(errors='replace')[:200]}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise RuntimeError(f"{model} at {base_url}: {error}") from None
    text = "".join(pieces)
    if not text.strip():
        raise RuntimeError(f"{model} at {base_url} returned no tokens")
    return text
