"""Shortened names carry digests long enough that a search for a colliding input is
impractical: 64 bits in a child's name, 80 in an LLMEngine's."""

from __future__ import annotations

import random
import re
import string

import yaml

from kiln.api import parse_service_spec
from kiln.render import ServiceRef, render
from kiln.render.meta import child_name

from ..conftest import ROOT
from ..support.planning import catalog_model, planned


def test_sixteen_thousand_long_names_give_sixteen_thousand_child_names():
    """With the 24-bit digest of before, 2**14 names collided about 8 times (a birthday
    search, done in a second); with 64 bits a collision needs about 2**32 names."""
    rng = random.Random(19)
    bases = {"".join(rng.choices(string.ascii_lowercase, k=60)) for _ in range(2 ** 14)}
    names = {child_name(base, "server") for base in bases}
    assert len(names) == len(bases)
    assert all(len(name) <= 63 for name in names)


def test_a_shortened_name_keeps_64_bits_of_digest():
    name = child_name("x" * 60, "launcher")
    assert re.fullmatch(r"x+-[0-9a-f]{16}-launcher", name) and len(name) <= 63


def test_an_engine_name_keeps_80_bits_of_digest_and_fits_a_label():
    manifest = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
    manifest["spec"]["model"]["source"] = "hf://org/" + "m" * 90
    spec = parse_service_spec(manifest["spec"])
    result, gpu = planned(spec, catalog_model("hf://mistralai/Mistral-7B-Instruct-v0.3"))
    rendered = render(ServiceRef("a", "llm", "uid"), spec, result, gpu)
    name = rendered.engine["metadata"]["name"]
    assert re.fullmatch(r"m+-[0-9a-f]{20}", name) and len(name) <= 63
