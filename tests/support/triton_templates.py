"""NVIDIA's real ``inflight_batcher_llm`` templates for the model-repository tests.

``reference/triton-templates/<model>/config.pbtxt`` are byte-exact copies of the templates
the Triton trtllm image ships in ``/app/all_models/inflight_batcher_llm`` (TensorRT-LLM
``triton_backend/all_models/inflight_batcher_llm``; sources and commits in that folder's
README). ``write_templates`` lays them out as the image does, with a stand-in ``1/model.py``
for the Python models (the tests never run them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent / "reference"
TEMPLATES = REFERENCE / "triton-templates"
PLACEHOLDERS = json.loads((REFERENCE / "triton-trtllm-templates.json").read_text())
MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")


def write_templates(root: Path) -> Path:
    for model in MODELS:
        folder = root / model
        (folder / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TEMPLATES / model / "config.pbtxt", folder / "config.pbtxt")
        if model != "ensemble":
            (folder / "1" / "model.py").write_text("# the image's model code goes here\n")
    return root
