"""A Hub ``config.json`` is whatever the repository a tenant names holds. The operator reads a
bounded file, keeps a bounded cache of them, and says Fits=Unknown with a short reason for
anything it cannot size; never an exception, never a message the size of the file."""

from __future__ import annotations

import json

import pytest

from kiln.api import parse_service_spec
from kiln.controller.models import (FAILED_FETCH_SECONDS, MAX_CACHED_CONFIGS, MAX_CONFIG_BYTES, REASON_CHARS,
                                    ModelResolver)
from kiln.planner import lookup_gpu, model_config, plan
from kiln.errors import PlanRefused
from kiln.planner.model import MAX_DIMENSION

LLAMA = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 16, "hidden_size": 2048,
         "intermediate_size": 8192, "num_attention_heads": 16, "num_key_value_heads": 8,
         "vocab_size": 32000, "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}

HOSTILE = {
    "architectures a number": {**LLAMA, "architectures": 5},
    "architectures a mapping": {**LLAMA, "architectures": {"0": "LlamaForCausalLM"}},
    "architectures empty": {**LLAMA, "architectures": []},
    "a long architecture": {**LLAMA, "architectures": ["X" * 200_000]},
    "an infinite size": {**LLAMA, "hidden_size": float("inf")},
    "a size past any GPU": {**LLAMA, "hidden_size": 10**4000},
    "more heads than hidden units": {**LLAMA, "num_attention_heads": 1e308, "num_key_value_heads": None},
    "layers a string": {**LLAMA, "num_hidden_layers": "32"},
    "not an object": [1, 2, 3],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_config_is_unknown_or_malformed_with_a_short_reason(case):
    try:
        config, why = model_config("hf://someone/model", HOSTILE[case])  # type: ignore[arg-type]
    except ValueError as error:  # malformed: the resolver says so
        config, why = None, str(error)
    assert config is None
    assert 0 < len(why) <= REASON_CHARS, why[:400]


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_the_resolver_says_unknown_for_it(case, monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HOSTILE[case]))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: str(tmp_path / "config.json"))
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    resolved, why = await ModelResolver().resolve(spec, None)
    assert resolved is None and 0 < len(why) <= REASON_CHARS


async def test_a_config_over_the_bound_is_not_read(monkeypatch, tmp_path):
    big = {**LLAMA, "padding": "x" * (MAX_CONFIG_BYTES + 1)}
    (tmp_path / "config.json").write_text(json.dumps(big))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: str(tmp_path / "config.json"))
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    resolved, why = await ModelResolver().resolve(spec, None)
    assert resolved is None and "larger than" in why and len(why) <= REASON_CHARS


async def test_the_cache_of_configs_is_bounded(monkeypatch, tmp_path):
    """Each (source, revision) a tenant names is a new entry: a loop over revisions must not
    grow the operator without end."""
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: str(tmp_path / "config.json"))
    models = ModelResolver()
    for i in range(MAX_CACHED_CONFIGS + 50):
        spec = parse_service_spec({"model": {"source": "hf://someone/model", "revision": f"r{i}"}})
        resolved, _ = await models.resolve(spec, None)
        assert resolved is not None
    assert len(models._cache) == MAX_CACHED_CONFIGS


def test_a_config_at_the_bounds_plans_without_an_exception():
    huge = {**LLAMA, **{key: MAX_DIMENSION for key in (
        "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
        "num_key_value_heads", "vocab_size", "max_position_embeddings")}}
    config, why = model_config("hf://someone/model", huge)
    assert config is not None, why
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    try:
        assert plan(config, spec, lookup_gpu(spec.gpu.type)).fits is False
    except PlanRefused:
        pass  # a layout the model cannot take: refused, naming why


async def test_a_hub_that_cannot_be_reached_is_asked_again_only_after_a_while(monkeypatch):
    """An air-gapped cluster: each fetch of config.json fails after huggingface_hub's own
    retries (tens of seconds, in a reconcile slot). The failure is remembered per model,
    revision and token for FAILED_FETCH_SECONDS; a service with another token asks for
    itself."""
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(kwargs.get("token"))
        raise OSError("Connection refused")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", unreachable)
    now = [1000.0]
    models = ModelResolver(clock=lambda: now[0])
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    first = await models.resolve(spec, "token-a")
    assert first[0] is None and "Connection refused" in first[1]
    now[0] += FAILED_FETCH_SECONDS - 1
    assert await models.resolve(spec, "token-a") == first
    assert calls == ["token-a"]
    await models.resolve(spec, "token-b")
    assert calls == ["token-a", "token-b"]
    now[0] += 1
    await models.resolve(spec, "token-a")
    assert calls == ["token-a", "token-b", "token-a"]
    for i in range(MAX_CACHED_CONFIGS + 50):
        await models.resolve(parse_service_spec({"model": {"source": "hf://someone/model", "revision": f"r{i}"}}), None)
    assert len(models._failed) == MAX_CACHED_CONFIGS
