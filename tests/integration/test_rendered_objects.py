"""Every object ``kiln render`` produces is one a real API server accepts.

For every example and for every manifest of the hostile-input corpus (the fixed draw that the
admission parity test uses) that ``kiln render`` accepts, each rendered object is created on
the real control plane with a server-side dry run (``dryRun=All``) and kubectl's strict field
validation. The third-party kinds (LeaderWorkerSet, ScaledObject, HTTPScaledObject, PodMonitor,
HTTPRoute, InferencePool) are checked against the CRDs in ``tests/support/schemas``, installed
for the session. The count is printed with the result.
"""

from __future__ import annotations

import json

import pytest
import yaml

from ..support.hostile import sweep_hostile
from ..support.real_cluster import path_of

from ..conftest import EXAMPLES
from .test_hostile_input import _kiln


def _discovery(plane):
    """(apiVersion, kind) -> (plural, namespaced) for every resource the server serves."""
    found = {}

    def read(api_version, url):
        for resource in plane.http.get(plane.server + url, timeout=30).json().get("resources", []):
            if "/" not in resource["name"]:
                found[(api_version, resource["kind"])] = (resource["name"], resource["namespaced"])
    read("v1", "/api/v1")
    for group in plane.http.get(plane.server + "/apis", timeout=30).json()["groups"]:
        for version in group["versions"]:
            read(version["groupVersion"], "/apis/" + version["groupVersion"])
    return found


def _url(api_version, plural, namespace):
    base = "/api/v1" if api_version == "v1" else "/apis/" + api_version
    return base + (f"/namespaces/{namespace}" if namespace else "") + "/" + plural


def test_every_rendered_object_is_accepted_by_the_api_server(backend, control_plane, tmp_path):
    if backend != "real":
        pytest.skip("checked against the real API server")
    plane = control_plane
    served = _discovery(plane)
    namespaces: set[str] = set()
    checked, refused, manifests = [], [], []

    def check(label, manifest):
        code, out, err = _kiln(tmp_path, manifest)
        if code != 0:
            return
        manifests.append(label)
        for obj in json.loads(out)["items"]:
            key = (obj["apiVersion"], obj["kind"])
            assert key in served, f"{label}: the server does not serve {key}"
            plural, namespaced = served[key]
            namespace = obj["metadata"].get("namespace") if namespaced else None
            if namespaced and namespace not in namespaces:
                plane.http.post(plane.server + path_of("namespaces"), timeout=30, json={
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                namespaces.add(namespace)
            response = plane.http.post(
                plane.server + _url(obj["apiVersion"], plural, namespace),
                data=json.dumps(obj), headers={"Content-Type": "application/json"},
                params={"dryRun": "All", "fieldValidation": "Strict"}, timeout=30)
            checked.append(key)
            if response.status_code >= 300:
                refused.append(f"{label}: {obj['kind']} {obj['metadata'].get('name')}: "
                               f"{response.status_code} {response.text[:400]}")

    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "LLMService":
                check(f"examples/{path.name}", document)
    examples = len(manifests)

    sweep_hostile(lambda manifest: check(f"hostile/{len(manifests)}", manifest))
    kinds = sorted({kind for _, kind in checked})
    summary = (f"rendered objects: {len(checked) - len(refused)}/{len(checked)} accepted by the API server "
               f"(dry run) from {examples} examples and {len(manifests) - examples} accepted hostile "
               f"manifests; kinds: {', '.join(kinds)}")
    print(summary)
    assert examples > 0 and len(manifests) > examples
    assert not refused, summary + "\n" + "\n".join(refused[:15])
