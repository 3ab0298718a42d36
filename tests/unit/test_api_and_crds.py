from __future__ import annotations

import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kiln.api import parse_service_manifest, parse_service_spec
from kiln.api.crd import crds
from kiln.errors import SpecInvalid

from ..conftest import EXAMPLES, ROOT


def test_crds_dir_matches_generator(tmp_path):
    subprocess.run([sys.executable, "-m", "kiln.cli", "crds", "-o", str(tmp_path)], check=True)
    for generated in tmp_path.iterdir():
        assert (ROOT / "crds" / generated.name).read_text() == generated.read_text(), \
            f"crds/{generated.name} is stale: run `kiln crds -o crds`"


@pytest.mark.parametrize("crd", crds(), ids=lambda c: c["metadata"]["name"])
def test_crd_is_valid_apiextensions_v1(crd):
    kubernetes_validate.validate(crd, "1.33", strict=True)


def _defaults(node, path):
    """Every ``default`` in a schema, by path."""
    if not isinstance(node, dict):
        return []
    found = [path] if "default" in node else []
    for key, child in (node.get("properties") or {}).items():
        found += _defaults(child, f"{path}.{key}")
    return found + _defaults(node.get("items"), f"{path}[]")


@pytest.mark.parametrize("crd", crds(), ids=lambda c: c["metadata"]["name"])
def test_the_api_server_fills_in_nothing_in_a_status(crd):
    # The operator writes the whole status and compares it with what it read: a default the
    # API server puts back after the operator removed a field made that write a no-op the
    # operator sent again on every full resync (status.endpoints of a DJL service, which has
    # no OpenAI endpoint, at a thousand services).
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert _defaults(status, "status") == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_generated_schema(path):
    schema = crds()[1]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for doc in yaml.safe_load_all(path.read_text()):
        # OpenAPI v3.0 schemas use draft-4 semantics (boolean exclusiveMinimum).
        jsonschema.Draft4Validator(schema).validate(doc)
        parse_service_manifest(doc)


@pytest.mark.parametrize("spec, field", [
    ({"model": {"source": "hf://a/b"}, "precision": "fp9"}, "spec.precision:"),
    ({"model": {"source": "hf://a/b"}, "gpus": 8, "parallelism": {"tensor": 3, "pipeline": 1}},
     "spec.parallelism"),
    ({"model": {"source": "hf://a/b"}, "bogus": 1}, "spec.bogus: unknown field"),
    ({"model": {"source": "hf://a/b"}, "gpus": -1}, "spec.gpus:"),
    ({}, "spec.model: required field is missing"),
    ({"model": {"source": "pvc://claim/../etc"}}, "spec.model.source:"),
    ({"model": {"source": "https://user:pw@host/x"}}, "spec.model.source:"),
    ({"model": {"source": "hf://a/b"}, "autoscaling": {"mode": "builtin", "initialBurstHeadroom": -1}},
     "spec.autoscaling.initialBurstHeadroom:"),
])
def test_invalid_specs_name_the_field(spec, field):
    with pytest.raises(SpecInvalid) as error:
        parse_service_spec(spec)
    assert error.value.message.startswith(field)
    assert "\n" not in error.value.message


@pytest.mark.parametrize("mode", ["builtin", "keda", "hpa"])
def test_scale_to_zero_is_refused_where_nothing_wakes_it(mode):
    with pytest.raises(SpecInvalid) as error:
        parse_service_spec({"model": {"source": "hf://a/b"},
                            "autoscaling": {"mode": mode, "minReplicas": 0, "maxReplicas": 2}})
    message = error.value.message
    assert message.startswith("spec.autoscaling") and "minReplicas: 0" in message
    assert f"mode {mode}" in message and "autoscaling.mode: keda-http" in message
    assert "\n" not in message
    # A service parked at zero on purpose stays accepted, and so is the mode that wakes.
    parse_service_spec({"model": {"source": "hf://a/b"}, "replicas": 0,
                        "autoscaling": {"mode": "none", "minReplicas": 0}})
    parse_service_spec({"model": {"source": "hf://a/b"},
                        "autoscaling": {"mode": "keda-http", "minReplicas": 0, "maxReplicas": 2}})


@pytest.mark.parametrize("extra, field, words", [
    ({"runtime": {"server": "djl"}}, "spec.autoscaling", "needs runtime.server: triton"),
    ({"gateway": {"name": "gw"}}, "spec.gateway", "past the interceptor"),
])
def test_keda_http_is_refused_where_the_interceptor_cannot_hold_requests(extra, field, words):
    with pytest.raises(SpecInvalid) as error:
        parse_service_spec({"model": {"source": "hf://a/b"}, **extra,
                            "autoscaling": {"mode": "keda-http", "minReplicas": 0}})
    assert words in error.value.message and "\n" not in error.value.message
