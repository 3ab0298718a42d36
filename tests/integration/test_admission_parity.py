"""Admission parity: the real API server and ``kiln render`` give every manifest the same verdict.

Every LLMService manifest the suites use — the examples, the invalid specs of the unit and
integration tests, and a fixed (derandomized) draw of the hostile-input corpus — is created on
the real control plane with a server-side dry run and kubectl's strict field validation, and
rendered by ``kiln render``. What render refuses the API server must refuse (the CRD's schema
and CEL rules), and what render accepts it must accept. Only the planner's refusals
(:class:`kiln.errors.PlanRefused`: does not fit, a GPU outside the catalog, a layout the model
cannot take) are admitted by the API server, which cannot know the model or the catalog; they
are counted apart. The count is printed with the result.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from kiln.cli import parser
from kiln.errors import KilnError, PlanRefused

from ..support.hostile import BASE, sweep_hostile
from ..support.real_cluster import path_of

from ..conftest import EXAMPLES
from .test_operator import INVALID, MISTRAL, _invalid

UNIT_INVALID_SPECS = [
    {"model": {"source": "hf://a/b"}, "precision": "fp9"},
    {"model": {"source": "hf://a/b"}, "gpus": 8, "parallelism": {"tensor": 3, "pipeline": 1}},
    {"model": {"source": "hf://a/b"}, "bogus": 1},
    {"model": {"source": "hf://a/b"}, "gpus": -1},
    {},
    {"model": {"source": "pvc://claim/../etc"}},
    {"model": {"source": "https://user:pw@host/x"}},
    {"model": {"source": "hf://a/b", "calibration": {"source": "s3://calib/set"}}},
    {"model": {"source": "hf://a/b", "calibration": {"source": "s3://calib/set"}}, "precision": "fp8",
     "runtime": {"server": "djl"}},
    {"model": {"source": "hf://a/b", "calibration": {"source": "hf://datasets/x"}}, "precision": "fp8"},
    {"model": {"source": "hf://a/b", "calibration": {"source": "pvc://sets/../x"}}, "precision": "int4-awq"},
    {"model": {"source": "hf://a/b", "calibration": {}}, "precision": "fp8"},
    {"model": {"source": "hf://a/b", "calibration": {"source": "pvc://kiln-engine-cache"}}, "precision": "fp8"},
    {"model": {"source": "hf://a/b", "calibration": {"source": "pvc://shared-cache/sets"}}, "precision": "fp8",
     "engineCache": {"claimName": "shared-cache"}},
]


# Where the API server's checks differ from a JSON Schema validator's: an integer 0 against a
# fractional minimum (kube-openapi compares it with int64(0.01), which is 0), and a null or
# empty namespace (the server takes the request's).
SERVER_QUIRKS = [
    {"engine": {"kvCacheFreeGpuMemFraction": 0}},
    {"autoscaling": {"mode": "hpa", "maxReplicas": 2, "targetKVCacheUtilization": 0}},
    {"metadata": {"name": "quirk-null-namespace", "namespace": None}},
    {"metadata": {"name": "quirk-empty-namespace", "namespace": ""}},
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
    for i, change in enumerate(copy.deepcopy(SERVER_QUIRKS)):
        manifest = copy.deepcopy(BASE)
        manifest["metadata"] = change.pop("metadata", {"name": f"quirk-{i}", "namespace": "llm"})
        manifest["spec"].update(change)
        corpus.append((f"server-quirk/{i}", manifest))
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


@dataclass
class Verdicts:
    label: str
    refusal: KilnError | None  # what ``kiln render`` refuses the manifest with; None: it renders
    admitted: bool             # by the API server
    detail: str                # the API server's answer
    manifest: Any

    @property
    def planner_only(self) -> bool:
        """Refused by the planner alone, which knows what no schema can: the model, the catalog."""
        return self.admitted and isinstance(self.refusal, PlanRefused)

    @property
    def agree(self) -> bool:
        return (self.refusal is None) == self.admitted or self.planner_only


def render_refusal(tmp_path, manifest) -> KilnError | None:
    """What ``kiln render -f FILE -o json`` refuses ``manifest`` with, or None when it renders.
    Its command, as ``kiln``'s ``main`` runs it; ``main`` prints the refusal after ``error:`` and
    exits 2, and any other exception is a failure here as it is a bug there."""
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(manifest, allow_unicode=True, sort_keys=False))
    args = parser().parse_args(["render", "-f", str(path), "-o", "json"])
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            args.func(args)
    except KilnError as error:
        return error
    return None


def test_the_api_server_and_render_agree_on_every_manifest(backend, control_plane, tmp_path):
    if backend != "real":
        pytest.skip("parity is checked against the real API server")
    admission = Admission(control_plane)
    results: list[Verdicts] = []

    def check(label, manifest):
        refusal = render_refusal(tmp_path, manifest)
        admitted, detail = admission.verdict(manifest)
        results.append(Verdicts(label, refusal, admitted, detail, manifest))

    for label, manifest in fixed_corpus():
        check(label, manifest)
    sweep_hostile(lambda manifest: check(f"hostile/{len(results)}", manifest))

    planned = [r for r in results if r.planner_only]
    disagree = [r for r in results if not r.agree]
    summary = (f"admission parity: {len(results) - len(disagree) - len(planned)}/{len(results) - len(planned)} "
               f"manifests agree ({sum(r.refusal is None for r in results)} accepted by render, "
               f"{sum(r.admitted for r in results)} by the API server; {len(planned)} more refused by "
               "the planner only)")
    print(summary)
    assert not disagree, summary + "\n" + "\n".join(
        f"{r.label}: render {'refuses (' + r.refusal.message[:200] + ')' if r.refusal else 'accepts'}, "
        f"API server {'accepts' if r.admitted else 'refuses'} ({r.detail}): "
        f"{yaml.safe_dump(r.manifest.get('spec'), default_flow_style=True, width=1000).strip()[:300]}"
        for r in disagree[:15])


def test_only_the_planners_refusals_are_exempt(tmp_path):
    """The exemption is the planner's error class, not a message: a refusal for the name or the
    schema that the API server admitted, or a manifest render accepts that the server refused,
    is a disagreement (the server's verdicts are given here; the real ones are above)."""
    def verdicts(spec_change=None, *, name="mistral-7b", admitted):
        manifest = copy.deepcopy(MISTRAL)
        manifest["metadata"]["name"] = name
        manifest["spec"].update(spec_change or {})
        return Verdicts(name, render_refusal(tmp_path, manifest), admitted, "", manifest)

    unknown_gpu = verdicts({"gpu": {"type": "x" * 40}}, admitted=True)
    assert "unknown GPU" in unknown_gpu.refusal.message and "spec.gpu.memoryGiB and spec.gpu.arch" in \
        unknown_gpu.refusal.message
    no_arch = verdicts({"gpu": {"type": "x" * 40, "memoryGiB": 80}}, admitted=True)
    too_big = verdicts({"model": {"source": "hf://meta-llama/Llama-3.1-405B-Instruct"}, "gpus": 1},
                       admitted=True)
    heads = verdicts({"gpus": 3, "parallelism": {"tensor": 3, "pipeline": 1}}, admitted=True)
    for planner_only in (unknown_gpu, no_arch, too_big, heads):
        assert isinstance(planner_only.refusal, PlanRefused), planner_only.refusal
        assert planner_only.agree, planner_only.refusal.message

    # The CRD admitting a name whose derived objects are invalid: render refuses it, not the planner.
    bad_name = verdicts(name="8b", admitted=True)
    assert bad_name.refusal is not None and not isinstance(bad_name.refusal, PlanRefused)
    # The CLI accepting what the cluster refuses.
    accepted = verdicts(admitted=False)
    assert accepted.refusal is None
    assert not bad_name.agree and not accepted.agree
