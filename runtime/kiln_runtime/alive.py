"""``kiln-runtime alive``: the Triton serving container's liveness probe.

A wedged engine (a collective that never returns, a kernel that never ends) leaves the process
up and its HTTP routes answering, so an HTTP probe never restarts it; its requests just never
finish. What stops is the executor's loop: the TensorRT-LLM backend publishes each iteration's
statistics, ``nv_trt_llm_general_metrics{general_type="iteration_counter"}`` among them, only
as the executor produces them (``ModelInstanceState::WaitForStats`` in tensorrtllm_backend
``inflight_batcher_llm/src/model_instance_state.cc`` polls ``getLatestIterationStats()`` and
updates the gauges from each new iteration; none comes while nothing runs).

So the probe reads the counter on rank 0's metrics page and keeps, in a small state file, when
it last moved:

- it moved within :data:`STALL_SECONDS`: the engine is working, and no request is sent;
- it has not (an idle engine looks the same as a wedged one) or the page cannot be read: one
  short generation through the OpenAI endpoint settles it. It comes back: alive, and the clock
  starts again. It does not within :data:`GENERATION_TIMEOUT`: not alive, and each probe after
  it tries again until the kubelet's failure threshold restarts the container.

A busy replica is never sent a probe request; an idle one gets one two-token completion every
:data:`STALL_SECONDS`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .drain import engine_gauge

__all__ = ["STALL_SECONDS", "GENERATION_TIMEOUT", "STATE_FILE", "Verdict", "check"]

# Far above one iteration's time: an iteration runs at most maxNumTokens of context (chunked)
# or one token of each generation in the batch, seconds at the very most.
STALL_SECONDS = 120.0
# The probe's own timeout (kiln.render.serving, timeoutSeconds) leaves room for this and for
# reading the page.
GENERATION_TIMEOUT = 45.0
STATE_FILE = "/tmp/kiln/liveness.json"
_COUNTER = ("nv_trt_llm_general_metrics", 'general_type="iteration_counter"')


@dataclass(frozen=True)
class Verdict:
    alive: bool
    reason: str


def _load(path: Path) -> tuple[float | None, float | None]:
    try:
        state = json.loads(path.read_text()[:4096])
        return float(state["counter"]), float(state["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def _save(path: Path, counter: float | None, since: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".tmp")
    staged.write_text(json.dumps({"counter": counter, "since": since}))
    os.replace(staged, path)


def check(metrics_url: str, generate: Callable[[], object], state: Path,
          stall: float = STALL_SECONDS, clock: Callable[[], float] = time.time) -> Verdict:
    """One probe: is the engine making progress, or can it at least answer?"""
    now = clock()
    counter = engine_gauge(metrics_url, *_COUNTER)
    last, since = _load(state)
    if counter is not None and (counter != last or since is None):
        _save(state, counter, now)
        return Verdict(True, f"iteration {counter:.0f}")
    if counter is not None and since is not None and now - since < stall:
        return Verdict(True, f"iteration {counter:.0f}, unchanged for {now - since:.0f}s")
    seen = ("metrics page unreadable" if counter is None
            else f"no iteration for {now - (since or now):.0f}s")
    try:
        generate()
    except RuntimeError as error:
        return Verdict(False, f"{seen}, and a generation failed: {error}")
    # Re-read: the generation itself ran iterations.
    after = engine_gauge(metrics_url, *_COUNTER)
    _save(state, after if after is not None else counter, clock())
    return Verdict(True, f"{seen}; a generation came back")
