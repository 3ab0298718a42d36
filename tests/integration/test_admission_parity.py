"""Admission parity: the real API server and ``kiln render`` give every manifest the same verdict.

Every LLMService manifest the suites use — the examples, the invalid specs of the unit and
integration tests, and a fixed (derandomized) draw of the hostile-input corpus — is created on
the real control plane with a server-side dry run and kubectl's strict field validation, and
rendered by ``kiln render``. What render refuses the API server must refuse (the CRD's schema
and CEL rules), and what render accepts it must accept. The count is printed with the result.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from ..support.real_cluster import path_of

from ..conftest import EXAMPLES, ROOT
from .test_hostile_input import BASE, _kiln, _mutate, mutations
from .test_operator import INVALID, _invalid

HOSTILE_EXAMPLES = 300
PLANNER_REFUSALS = re.compile(r"error: (does not fit: |spec\.gpu\.arch: required for )")
UNIT_INVALID_SPECS = [
    {"model": {"source": "hf://a/b"}, "precision": "fp9"},
    {"model": {"source": "hf://a/b"}, "gpus": 8, "parallelism": {"tensor": 3, "pipeline": 1}},
    {"model": {"source": "hf://a/b"}, "bogus": 1},
    {"model": {"source": "hf://a/b"}, "gpus": -1},
    {},
    {"model": {"source": "pvc://claim/../etc"}},
    {"model": {"source": "https://user:pw@host/x"}},
]


def fixed_corpus():
    """(label, manifest) for every hand-written manifest the suites use."""
    corpus = [(f"examples/{p.name}", d) for p in EXAMPLES for d in yaml.safe_load_all(p.read_text())
              if d and d.get("kind") == "LLMService"]
    corpus += [(f"invalid/{case}", _invalid(INVALID[case][0])) for case in sorted(INVALID)]
    for i, spec in enumerate(UNIT_INVALID_SPECS):
        manifest = copy.deepcopy(BASE)
        manifest["metadata"] = {"name": f"unit-{i}", "namespace": "llm"}
        manifest["spec"] = spec
        corpus.append((f"unit-invalid/{i}", manifest))
    return corpus


class Admission:
    """Creates with ``dryRun=All`` as the admin, creating namespaces as they come up."""

    def __init__(self, plane):
        self.plane = plane
        self.namespaces: set[str] = set()

    def verdict(self, manifest) -> tuple[bool, str]:
        meta = manifest.get("metadata") if isinstance(manifest.get("metadata"), dict) else {}
        namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else "default"
        namespace = namespace or "default"
        if namespace not in self.namespaces:
            # Refused names are refused here too, and then by the create below as well.
            self.plane.http.post(self.plane.server + path_of("namespaces"), timeout=30, json={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            self.namespaces.add(namespace)
        response = self.plane.http.post(
            self.plane.server + path_of("llmservices", namespace),
            data=json.dumps(manifest, allow_nan=False), headers={"Content-Type": "application/json"},
            params={"dryRun": "All", "fieldValidation": "Strict"}, timeout=30)
        return response.status_code < 300, f"{response.status_code} {response.text[:300]}"


def test_the_api_server_and_render_agree_on_every_manifest(backend, control_plane, tmp_path):
    if backend != "real":
        pytest.skip("parity is checked against the real API server")
    admission = Admission(control_plane)
    results = []

    def check(label, manifest):
        code, _, err = _kiln(tmp_path, manifest)
        assert code in (0, 2), (label, err)
        accepted, detail = admission.verdict(manifest)
        results.append((label, code == 0, accepted, err.strip()[:200], detail, manifest))

    for label, manifest in fixed_corpus():
        check(label, manifest)

    @settings(max_examples=HOSTILE_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(mutations)
    def hostile(changes):
        manifest = _mutate(changes)
        try:
            json.dumps(manifest, allow_nan=False)
        except ValueError:  # not expressible as JSON: no API server can be sent it
            return
        check(f"hostile/{len(results)}", manifest)

    hostile()
    # Render also plans: a service that does not fit its GPUs, or names a GPU outside the
    # catalog without its architecture, is refused by render and admitted by the API server
    # (no schema can know the model or the catalog); the operator then stalls it with the same
    # message. Those are counted apart, every other verdict must agree.
    planned = [r for r in results if not r[1] and r[2] and PLANNER_REFUSALS.search(r[3])]
    disagree = [r for r in results if r[1] != r[2] and r not in planned]
    summary = (f"admission parity: {len(results) - len(disagree) - len(planned)}/{len(results) - len(planned)} "
               f"manifests agree ({sum(r[1] for r in results)} accepted by render, "
               f"{sum(r[2] for r in results)} by the API server; {len(planned)} more refused by "
               "the planner only)")
    print(summary)
    assert not disagree, summary + "\n" + "\n".join(
        f"{label}: render {'accepts' if r else 'refuses'} ({err}), API server {'accepts' if a else 'refuses'} "
        f"({detail}): {yaml.safe_dump(m.get('spec'), default_flow_style=True, width=1000).strip()[:300]}"
        for label, r, a, err, detail, m in disagree[:15])
