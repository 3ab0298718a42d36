"""Edits to a TensorRT-LLM checkpoint between conversion and ``trtllm-build``.

``mapping.gpus_per_node``: neither ``convert_checkpoint.py`` nor ``quantize.py`` in
TensorRT-LLM 1.2.1 takes it (both build ``Mapping(world_size, rank, tp_size, pp_size, ...)``
and get ``Mapping``'s default of 8), and ``trtllm-build`` lost its ``--gpus_per_node`` after
1.0. ``trtllm-build`` reads the checkpoint's ``config.json`` through
``PretrainedConfig.__init__`` -> ``Mapping.from_dict(mapping)`` (``tensorrt_llm/models/
modeling_utils.py``, ``tensorrt_llm/mapping.py``) and writes the same mapping into the
engine's ``config.json``, which the executor sizes its world from. So the checkpoint's
config is where a 4-GPU-per-node layout is stated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import StepFailed

__all__ = ["set_gpus_per_node"]


def set_gpus_per_node(checkpoint_dir: Path, gpus_per_node: int) -> dict[str, Any]:
    """Write ``mapping.gpus_per_node`` into the checkpoint's config.json; returns the mapping."""
    path = checkpoint_dir / "config.json"
    try:
        config = json.loads(path.read_text())
        mapping = config["mapping"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise StepFailed("mapping", f"{path} is missing or has no mapping") from None
    if not isinstance(mapping, dict):
        raise StepFailed("mapping", f"{path}: its mapping is not an object")
    mapping["gpus_per_node"] = gpus_per_node
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(config, indent=4))
    os.replace(partial, path)
    return dict(mapping)
