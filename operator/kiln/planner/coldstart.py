"""How long a replica takes from being asked for to answering: the cold start a request
held at zero replicas waits. Pure.

Two parts: the pod starting with the serving image already on the node (container start,
Triton and its OpenAI frontend initialising: ``POD_START_SECONDS``), and each GPU's engine
shard read from the engine cache volume (``weightBytesPerGpu`` at ``ENGINE_READ_BYTES_PER_SECOND``;
ranks read in parallel). Both are estimates of a typical RWX volume and a cached image; a
first pull of the serving image on a new node adds minutes. The simulator's default cold
start (90 s) is the same figure for a 7-70B replica.
"""

from __future__ import annotations

import math

from .plan import Plan

__all__ = ["cold_start_seconds", "cold_start_for_weights", "POD_START_SECONDS", "ENGINE_READ_BYTES_PER_SECOND"]

POD_START_SECONDS = 45
ENGINE_READ_BYTES_PER_SECOND = 500 * 2**20
UNKNOWN_WEIGHTS_SECONDS = 90  # no weight estimate (model config unknown): the simulator's figure


def cold_start_seconds(plan: Plan) -> int:
    """Expected seconds from a replica being requested to it serving."""
    return cold_start_for_weights(plan.weight_bytes_per_gpu)


def cold_start_for_weights(weight_bytes_per_gpu: float | None) -> int:
    """:func:`cold_start_seconds` of a plan with ``weight_bytes_per_gpu`` (None: unknown)."""
    if weight_bytes_per_gpu is None:
        return POD_START_SECONDS + UNKNOWN_WEIGHTS_SECONDS
    return POD_START_SECONDS + math.ceil(weight_bytes_per_gpu / ENGINE_READ_BYTES_PER_SECOND)
