"""The Job that removes an unreferenced engine's cache entry names it by its key alone."""

from __future__ import annotations

import pytest

from kiln.errors import SpecInvalid
from kiln.render.purge import purge_job

KEY = "ab" * 32


def test_the_job_removes_the_keyed_entry_from_the_claim_and_runs_restricted():
    job = purge_job("tiny-0123456789abcdef0123", KEY, "llm", "kiln-engine-cache")
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["kiln-runtime", "delete-entry", "--cache-root", "/engines", "--key", KEY]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["volumes"][0] == {"name": "engine-cache",
                                 "persistentVolumeClaim": {"claimName": "kiln-engine-cache"}}
    assert job["metadata"]["name"] == "tiny-0123456789abcdef0123-purge"
    assert "ownerReferences" not in job["metadata"]


@pytest.mark.parametrize("key", ["../" + KEY[3:], KEY.upper(), KEY[:-1], KEY + "0", "", None, 7,
                                 "/engines/" + KEY[9:], KEY[:-2] + ".."])
def test_a_hostile_key_is_refused_naming_the_engine(key):
    with pytest.raises(SpecInvalid) as error:
        purge_job("tiny-0123456789abcdef0123", key, "llm", "kiln-engine-cache")
    assert str(error.value).startswith("spec.key: LLMEngine tiny-0123456789abcdef0123 has no engine key")


@pytest.mark.parametrize("claim", ["", "../x", "Claim", "a/b", None, "a" * 254])
def test_a_claim_that_is_no_pvc_name_is_refused(claim):
    with pytest.raises(SpecInvalid) as error:
        purge_job("tiny-0123456789abcdef0123", KEY, "llm", claim)
    assert str(error.value).startswith("spec.cache.claimName: LLMEngine tiny-0123456789abcdef0123")


def test_a_name_the_api_server_would_refuse_as_a_label_is_refused():
    with pytest.raises(SpecInvalid):
        purge_job("x" * 100, KEY, "llm", "kiln-engine-cache")
