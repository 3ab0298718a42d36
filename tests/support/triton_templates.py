"""Stand-in ``inflight_batcher_llm`` templates for the model-repository tests.

The real templates ship in the Triton image (``/app/all_models/inflight_batcher_llm``) and
are not vendored here. These are written for the tests: each model's ``config.pbtxt`` holds
every placeholder the real template has (names from ``reference/triton-trtllm-templates.json``),
the structural ones where the real template puts them (backend, max_batch_size, decoupled,
queue policy, data types, instance counts) and the rest as ``parameters`` string values, as
the real ones do. So "every placeholder is filled and the result parses as a ModelConfig"
is checked against the real placeholder set.
"""

from __future__ import annotations

import json
from pathlib import Path

PLACEHOLDERS = json.loads((Path(__file__).resolve().parent / "reference" /
                           "triton-trtllm-templates.json").read_text())

_STRUCTURE = {
    "preprocessing": """name: "preprocessing"
backend: "python"
max_batch_size: ${triton_max_batch_size}
dynamic_batching {
  max_queue_delay_microseconds: ${max_queue_delay_microseconds}
  default_queue_policy: { max_queue_size: ${max_queue_size} }
}
input [ { name: "QUERY" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "INPUT_ID" data_type: TYPE_INT32 dims: [ -1 ] } ]
instance_group [ { count: ${preprocessing_instance_count} kind: KIND_CPU } ]
""",
    "tensorrt_llm": """name: "tensorrt_llm"
backend: "${triton_backend}"
max_batch_size: ${triton_max_batch_size}
model_transaction_policy { decoupled: ${decoupled_mode} }
dynamic_batching {
  preferred_batch_size: [ ${triton_max_batch_size} ]
  max_queue_delay_microseconds: ${max_queue_delay_microseconds}
  default_queue_policy: { max_queue_size: ${max_queue_size} }
}
input [
  { name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true },
  { name: "encoder_input_features" data_type: ${encoder_input_features_data_type} dims: [ -1, -1 ] optional: true },
  { name: "prompt_embedding_table" data_type: ${prompt_embedding_table_data_type} dims: [ -1, -1 ] optional: true },
  { name: "draft_logits" data_type: ${logits_datatype} dims: [ -1, -1 ] optional: true }
]
output [ { name: "output_ids" data_type: TYPE_INT32 dims: [ -1, -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
""",
    "postprocessing": """name: "postprocessing"
backend: "python"
max_batch_size: ${triton_max_batch_size}
input [ { name: "TOKENS_BATCH" data_type: TYPE_INT32 dims: [ -1, -1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_STRING dims: [ -1 ] } ]
instance_group [ { count: ${postprocessing_instance_count} kind: KIND_CPU } ]
""",
    "ensemble": """name: "ensemble"
platform: "ensemble"
max_batch_size: ${triton_max_batch_size}
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "generation_logits" data_type: ${logits_datatype} dims: [ -1, -1, -1 ] }
]
ensemble_scheduling {
  step [ { model_name: "preprocessing" model_version: -1
           input_map { key: "QUERY" value: "text_input" }
           output_map { key: "INPUT_ID" value: "_INPUT_ID" } } ]
}
""",
    "tensorrt_llm_bls": """name: "tensorrt_llm_bls"
backend: "python"
max_batch_size: ${triton_max_batch_size}
model_transaction_policy { decoupled: ${decoupled_mode} }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "prompt_embedding_table" data_type: ${prompt_embedding_table_data_type} dims: [ -1, -1 ] optional: true }
]
output [ { name: "generation_logits" data_type: ${logits_datatype} dims: [ -1, -1, -1 ] } ]
instance_group [ { count: ${bls_instance_count} kind: KIND_CPU } ]
""",
}


# Parameter keys that differ from their placeholder's name (tensorrtllm_backend docs/model_config.md).
PARAMETER_KEYS = {"tensorrt_llm": {"engine_dir": "gpt_model_path", "batching_strategy": "gpt_model_type",
                                   "encoder_engine_dir": "encoder_model_path"}}


def write_templates(root: Path) -> Path:
    for model, text in _STRUCTURE.items():
        present = {name for name in PLACEHOLDERS[model] if "${" + name + "}" in text}
        for name in PLACEHOLDERS[model]:
            if name not in present:
                text += ('parameters: {\n  key: "%s"\n  value: {\n    string_value: "${%s}"\n  }\n}\n'
                         % (PARAMETER_KEYS.get(model, {}).get(name, name), name))
        folder = root / model
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(text)
        if model != "ensemble":
            (folder / "1" / "model.py").write_text("# the image's model code goes here\n")
    return root
