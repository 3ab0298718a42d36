"""A Hub ``config.json`` is whatever the repository a tenant names holds. The operator reads a
bounded file, keeps a bounded cache of them, and says Fits=Unknown with a short reason for
anything it cannot size; never an exception, never a message the size of the file."""

from __future__ import annotations

import json
import re

import pytest

from kiln.api import parse_service_spec
from kiln.controller.models import (FAILED_FETCH_SECONDS, MAX_CACHED_CONFIGS, MAX_CONFIG_BYTES, REASON_CHARS,
                                    ModelResolver)
from kiln.planner import model_config
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
async def test_the_resolver_says_unknown_for_it(case, hub_cache):
    from tests.support.fake_hub import Repo, fake_hub

    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    with fake_hub({"someone/model": Repo({"config.json": json.dumps(HOSTILE[case]).encode()})}) as hub:
        resolved, why = await ModelResolver(endpoint=hub.url).resolve(spec, None)
        assert [method for method, _, _ in hub.requests][-1] == "GET"  # read, then refused
    assert resolved is None and 0 < len(why) <= REASON_CHARS


async def test_the_cache_of_configs_is_bounded(hub_cache):
    """Each (source, revision) a tenant names is a new entry: a loop over revisions must not
    grow the operator without end."""
    from tests.support.fake_hub import Repo, fake_hub

    with fake_hub({"someone/model": Repo({"config.json": json.dumps(LLAMA).encode()})}) as hub:
        models = ModelResolver(endpoint=hub.url)
        for i in range(MAX_CACHED_CONFIGS + 50):
            spec = parse_service_spec({"model": {"source": "hf://someone/model", "revision": f"r{i}"}})
            resolved, _ = await models.resolve(spec, None)
            assert resolved is not None
    assert len(models._cache) == MAX_CACHED_CONFIGS


def test_a_config_at_the_bounds_is_refused_naming_its_sizes():
    """Each size at its own bound, together a model past MAX_PARAMETERS: refused, not planned
    (a plan of it holds byte counts the API server cannot store; test_break_operator)."""
    huge = {**LLAMA, **{key: MAX_DIMENSION for key in (
        "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
        "num_key_value_heads", "vocab_size", "max_position_embeddings")}}
    with pytest.raises(ValueError, match="num_hidden_layers, hidden_size") as refused:
        model_config("hf://someone/model", huge)
    assert len(str(refused.value)) <= REASON_CHARS


async def test_a_hub_that_cannot_be_reached_is_asked_again_only_after_a_while(monkeypatch):
    """An air-gapped cluster: each fetch of config.json fails after huggingface_hub's own
    retries (tens of seconds, in a reconcile slot). The failure is remembered per model,
    revision and token for FAILED_FETCH_SECONDS; a service with another token asks for
    itself."""
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(kwargs.get("token"))
        raise OSError("Connection refused")

    monkeypatch.setattr("huggingface_hub.get_hf_file_metadata", unreachable)
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


# Against a Hub on localhost and the real huggingface_hub client (tests/support/fake_hub.py).
GATED = "hf://meta-llama/gated-model"


def _gated_hub():
    from tests.support.fake_hub import Repo, fake_hub
    return fake_hub({"meta-llama/gated-model": Repo({"config.json": json.dumps(LLAMA).encode()}, gated=True,
                                                    tokens=frozenset({"token-with-access"}))})


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """huggingface_hub's own disk cache, where it would write: in the chart's pod that is under
    a read-only root (HOME=/), and it is shared by every tenant's fetch."""
    cache = tmp_path / "hub-cache"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    return cache


async def test_a_gated_config_read_with_one_tenants_token_is_not_given_to_another(hub_cache):
    """Tenant A's Secret opens a gated model; tenant B names the same model with no token, or
    with a token that has no access. B's plan must not be made from the config A's token
    read: the resolver asks the Hub with B's token, and the Hub refuses it."""
    spec = parse_service_spec({"model": {"source": GATED}})
    with _gated_hub() as hub:
        models = ModelResolver(endpoint=hub.url)
        config, _ = await models.resolve(spec, "token-with-access")
        assert config is not None and config.num_layers == 16
        for token in (None, "a-token-without-access"):
            config, why = await models.resolve(spec, token)
            assert config is None and "gated" in why.lower(), why
        again, _ = await models.resolve(spec, "token-with-access")
        assert again is not None


async def test_an_operator_restart_does_not_read_a_gated_config_from_disk(hub_cache):
    """huggingface_hub answers a refused HEAD (401/403) from its disk cache when the file is
    there (file_download.py: 'Repository is gated and invalid/missing token sent => switch to
    local_files_only'): a config.json downloaded once with a token would be served to every
    later caller without one."""
    spec = parse_service_spec({"model": {"source": GATED}})
    with _gated_hub() as hub:
        assert (await ModelResolver(endpoint=hub.url).resolve(spec, "token-with-access"))[0] is not None
        config, why = await ModelResolver(endpoint=hub.url).resolve(spec, None)
        assert config is None and "gated" in why.lower(), why


async def test_the_resolver_writes_nothing_to_the_hub_cache(hub_cache, tmp_path, monkeypatch):
    """The operator's root filesystem is read-only (the chart mounts only /tmp): a fetch that
    needs huggingface_hub's cache directory would fail in every real deployment."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    spec = parse_service_spec({"model": {"source": GATED}})
    with _gated_hub() as hub:
        config, why = await ModelResolver(endpoint=hub.url).resolve(spec, "token-with-access")
    assert config is not None, why
    assert not hub_cache.exists() and list(scratch.iterdir()) == []


async def test_a_config_over_the_bound_is_not_downloaded(hub_cache):
    from tests.support.fake_hub import Repo, fake_hub

    big = json.dumps({**LLAMA, "padding": "x" * (MAX_CONFIG_BYTES + 1)}).encode()
    spec = parse_service_spec({"model": {"source": "hf://someone/huge"}})
    with fake_hub({"someone/huge": Repo({"config.json": big})}) as hub:
        config, why = await ModelResolver(endpoint=hub.url).resolve(spec, None)
        assert config is None and "larger than" in why and len(why) <= REASON_CHARS
        assert [method for method, _, _ in hub.requests] == ["HEAD"]


@pytest.mark.parametrize("fields, named", [
    ({"num_attention_heads": 16, "num_key_value_heads": 5}, "num_attention_heads (16) is not a multiple of "
                                                           "num_key_value_heads (5)"),
    ({"num_key_value_heads": 32}, "num_attention_heads (16) is not a multiple of num_key_value_heads (32)"),
    ({"num_local_experts": 8, "num_experts_per_tok": 9}, "num_experts_per_tok (9) exceeds the 8 experts"),
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings must be true or false"),
])
def test_a_config_no_model_can_have_is_malformed_naming_its_fields(fields, named):
    """Sizes each within bounds that no model has together: key/value heads that do not split
    the query heads into whole groups (transformers' ``repeat_kv`` and TensorRT-LLM's
    attention both need it), more experts per token than experts, a ``tie_word_embeddings``
    that is a string ("false" is true to Python). Planned, each gave a verdict on a model
    that cannot be built."""
    with pytest.raises(ValueError, match="^" + re.escape(f"config.json: {named}")):
        model_config("hf://someone/model", {**LLAMA, **fields})
