"""Model geometry read from a Hugging Face ``config.json``, and the catalog shipped with Kiln.

Supported: the dense and MoE decoder families TensorRT-LLM builds engines for (Llama,
Mistral, Mixtral, Qwen2/2.5/3 and Qwen3-MoE, Gemma, Phi-3/4, ChatGLM/GLM-4). Anything else,
and sliding-window attention, is reported as unsupported rather than guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from kiln_runtime import support

__all__ = ["ModelConfig", "UnsupportedModel", "load_catalog", "catalog_config", "model_config", "SUPPORTED"]

SUPPORTED = {
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM",
    "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "GemmaForCausalLM", "Phi3ForCausalLM",
    "ChatGLMModel", "ChatGLMForConditionalGeneration", "Mistral3ForConditionalGeneration",
}


# The largest figure a config.json may give for a count or a size (layers, hidden units,
# heads, vocabulary, positions): far past any model (a 10M-token context is 2**23.3), and
# small enough that the planner's arithmetic on it stays finite. A config.json is whatever
# the repository a tenant names holds.
MAX_DIMENSION = 2**30
# The most parameters the sizes together may make: hundreds of times the largest model
# published, and small enough that every byte count status.plan holds stays an int64 (the
# API server refuses a larger integer: it decodes it as a float).
MAX_PARAMETERS = 2**50
# The architecture's name as a refusal quotes it, at most.
_NAME_CHARS = 80


class UnsupportedModel(ValueError):
    """The config is readable but Kiln cannot size this architecture honestly."""


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    qkv_bias: bool = False
    # What ``quantization_config`` says the weights already are (kiln_runtime.support.prequantized).
    quantized: str | None = None

    @classmethod
    def from_hf(cls, raw: dict[str, Any]) -> ModelConfig:
        """Read an HF ``config.json`` (or a Kiln catalog entry); raise ValueError if malformed."""
        if not isinstance(raw, dict):
            raise ValueError("config.json must be a JSON object")
        named = raw.get("architectures")
        if named is not None and not isinstance(named, list):
            raise ValueError(f"config.json's \"architectures\" must be a list of names, as transformers writes "
                             f"it (got a {type(named).__name__})")
        first = named[0] if isinstance(named, list) and named else None
        if not (raw.get("architecture") or first):
            raise UnsupportedModel("config.json names no architecture (its \"architectures\" list, as "
                                   "transformers writes it, is missing or empty)")
        chosen = raw.get("architecture") or first
        if not isinstance(chosen, str):  # str() of a list nested a thousand deep is a RecursionError
            raise ValueError(f"config.json's \"architectures\" must be a list of names, as transformers writes "
                             f"it (its first is a {type(chosen).__name__})")
        architecture = chosen.split(" ", 1)[0]
        if architecture not in SUPPORTED:
            # Printable: the name is the config's to write, and the reason goes into a status
            # (a control character or a bidirectional override shown as its escape, by repr).
            shown = repr(architecture[:_NAME_CHARS])[1:-1] + ("..." if len(architecture) > _NAME_CHARS else "")
            raise UnsupportedModel(f"architecture {shown} is not supported by the planner")
        text: dict[str, Any] = raw["text_config"] if isinstance(raw.get("text_config"), dict) else raw
        merged = {**raw, **text}
        if merged.get("use_sliding_window") or (
                merged.get("sliding_window") and merged.get("use_sliding_window") is not False
                and architecture.startswith("Mistral")):
            raise UnsupportedModel("sliding-window attention does not follow the KV formula")

        def num(*names: str, default: int | None = None) -> int:
            for name in names:
                value = merged.get(name)
                if value is not None:
                    # A float only when whole (4096.0): int(0.5) is a count of none, and a
                    # divisor of none is a ZeroDivisionError further on.
                    if not isinstance(value, (int, float)) or isinstance(value, bool) \
                            or not 0 < value <= MAX_DIMENSION or value != int(value):
                        raise ValueError(f"config.json: {name} must be a whole number from 1 to "
                                         f"{MAX_DIMENSION}")
                    return int(value)
            if default is None:
                raise ValueError(f"config.json: {names[0]} is missing")
            return default

        heads = num("num_attention_heads", "n_head")
        hidden = num("hidden_size", "n_embd")
        if not merged.get("head_dim") and not merged.get("kv_channels") and heads > hidden:
            raise ValueError("config.json: num_attention_heads exceeds hidden_size and no head_dim is given")
        experts = num("num_local_experts", "num_experts", "n_routed_experts", default=0)
        intermediate = num("intermediate_size", "ffn_hidden_size")
        kv_heads = num("num_key_value_heads", "multi_query_group_num", default=heads)
        if heads % kv_heads:  # each key/value head serves a whole group (transformers' repeat_kv)
            raise ValueError(f"config.json: num_attention_heads ({heads}) is not a multiple of "
                             f"num_key_value_heads ({kv_heads})")
        per_token = num("num_experts_per_tok", default=2 if experts else 0)
        if experts and per_token > experts:
            raise ValueError(f"config.json: num_experts_per_tok ({per_token}) exceeds the {experts} experts")
        tied = False if merged.get("tie_word_embeddings") is None else merged["tie_word_embeddings"]
        if not isinstance(tied, bool):  # "false" is true to Python
            raise ValueError("config.json: tie_word_embeddings must be true or false")
        config = cls(
            architecture=architecture,
            num_layers=num("num_hidden_layers", "num_layers", "n_layer"),
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=num("head_dim", "kv_channels", default=hidden // heads),
            vocab_size=num("vocab_size", "padded_vocab_size"),
            max_position_embeddings=num("max_position_embeddings", "seq_length", default=4096),
            tie_word_embeddings=tied,
            num_experts=experts,
            experts_per_token=per_token,
            moe_intermediate_size=num("moe_intermediate_size", default=intermediate) if experts else 0,
            qkv_bias=architecture in ("Qwen2ForCausalLM",) or bool(merged.get("add_qkv_bias")),
            quantized=support.prequantized(raw),
        )
        if config.hf_param_count > MAX_PARAMETERS:
            raise ValueError(f"config.json: num_hidden_layers, hidden_size, intermediate_size, vocab_size and "
                             f"the head and expert counts make {config.hf_param_count:.2e} parameters, past "
                             f"the {MAX_PARAMETERS:.2e} Kiln plans")
        return config

    # Parameter counts, as TensorRT-LLM lays the weights out.
    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def layer_linear_params(self) -> int:
        """Weights of one decoder layer that quantization applies to (attention + MLP/experts)."""
        q_out = self.num_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        attention = self.hidden_size * (q_out + 2 * kv_out) + q_out * self.hidden_size
        if self.num_experts:
            mlp = self.num_experts * 3 * self.hidden_size * self.moe_intermediate_size
        else:
            mlp = 3 * self.hidden_size * self.intermediate_size
        return attention + mlp

    @property
    def layer_other_params(self) -> int:
        """Per-layer weights kept in 16 bit: norms, biases, the MoE router."""
        other = 2 * self.hidden_size
        if self.qkv_bias:
            other += (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        if self.architecture == "Qwen3ForCausalLM" or self.architecture == "Qwen3MoeForCausalLM":
            other += 2 * self.head_dim  # q_norm, k_norm
        if self.num_experts:
            other += self.hidden_size * self.num_experts
        return other

    @property
    def hf_param_count(self) -> int:
        """Parameters as Hugging Face counts them (lm_head only when untied)."""
        lm_head = 0 if self.tie_word_embeddings else self.embedding_params
        return (self.embedding_params + lm_head + self.hidden_size
                + self.num_layers * (self.layer_linear_params + self.layer_other_params))


@cache
def load_catalog() -> dict[str, dict[str, Any]]:
    """The model configs shipped with Kiln, keyed by Hugging Face id (aliases included)."""
    text = resources.files("kiln.planner").joinpath("data/model-configs.json").read_text()
    entries: dict[str, dict[str, Any]] = json.loads(text)
    catalog: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        catalog[name.lower()] = entry
        for alias in entry.get("aliases", []):
            catalog[alias.lower()] = entry
    return catalog


def catalog_config(hf_id: str) -> dict[str, Any] | None:
    return load_catalog().get(hf_id.lower())


def model_config(source: str, raw: dict[str, Any] | None = None) -> tuple[ModelConfig | None, str]:
    """The one path from a model source to what the planner sizes: ``raw`` (a config.json
    read from the Hub or a file) if given, else Kiln's catalog for ``hf://`` sources; ``(None,
    why)`` when there is none or it cannot be sized. A malformed ``raw`` raises ValueError."""
    if raw is None and source.startswith("hf://"):
        raw = catalog_config(source.removeprefix("hf://"))
    if raw is None:
        return None, f"no model config for {source}; it is not in Kiln's catalog"
    try:
        return ModelConfig.from_hf(raw), ""
    except UnsupportedModel as error:
        return None, str(error)
