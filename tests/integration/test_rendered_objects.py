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


# Where the pod templates of each rendered kind are (Kubernetes' own workload kinds are
# checked by the PodSecurity admission plugin itself, in its warn mode; a LeaderWorkerSet's
# templates are made Pods and created in a dry run, as the LWS controller's StatefulSets make
# them: the plugin enforces on Pods).
_LWS_TEMPLATES = (("leaderWorkerTemplate", "leaderTemplate"), ("leaderWorkerTemplate", "workerTemplate"))


def _levelled(level):
    return {f"pod-security.kubernetes.io/{mode}{suffix}": value for mode in ("enforce", "warn")
            for suffix, value in (("", level), ("-version", "latest"))}


def test_every_rendered_pod_meets_the_restricted_pod_security_standard(backend, control_plane, tmp_path):
    """Every pod Kiln makes runs under the restricted Pod Security profile, but a multi-node
    group's over RDMA (``spec.network``), whose IPC_LOCK capability baseline refuses too (the
    docs said to label its namespace baseline, which would have refused every pod of the
    group): ``privileged``, as docs/concepts/plan.md now says. The real API server's PodSecurity admission plugin
    (k8s.io/pod-security-admission, enforcing in a namespace labelled
    ``pod-security.kubernetes.io/enforce``) is the judge."""
    if backend != "real":
        pytest.skip("checked by the real API server's PodSecurity admission")
    plane = control_plane
    served = _discovery(plane)
    checked, violations = [], []

    def create(label, obj, namespace, dry_run=True):
        plural, _ = served[(obj["apiVersion"], obj["kind"])]
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        response = plane.http.post(
            plane.server + _url(obj["apiVersion"], plural, namespace), data=json.dumps(obj),
            headers={"Content-Type": "application/json"}, params={"dryRun": "All"} if dry_run else {}, timeout=30)
        warnings = [w for w in response.headers.get("Warning", "").split(", 299") if "PodSecurity" in w]
        if response.status_code >= 300 and response.status_code != 409:
            violations.append(f"{label}: {obj['kind']} {obj['metadata']['name']}: {response.status_code} "
                              f"{response.text[:400]}")
        violations.extend(f"{label}: {obj['kind']} {obj['metadata']['name']}: {w[:400]}" for w in warnings)

    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document.get("kind") != "LLMService":
                continue
            code, out, err = _kiln(tmp_path, document)
            assert code == 0, err
            items = json.loads(out)["items"]
            level = "privileged" if (document["spec"].get("network") or {}).get("rdmaResource") else "restricted"
            namespace = f"pss-{level}-{path.stem.replace('.', '-')}"[:63].rstrip("-")
            plane.http.post(plane.server + path_of("namespaces"), timeout=30, json={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": _levelled(level)}})
            for obj in items:  # a pod's ServiceAccount must exist for its dry run
                if obj["kind"] == "ServiceAccount":
                    create(path.name, obj, namespace, dry_run=False)
            for obj in items:
                if obj["kind"] in ("Deployment", "Job", "StatefulSet"):
                    checked.append(f"{path.name}: {obj['kind']} {obj['metadata']['name']} ({level})")
                    create(path.name, obj, namespace)
                elif obj["kind"] == "LeaderWorkerSet":
                    for part, name in _LWS_TEMPLATES:
                        template = obj["spec"][part][name]
                        pod = {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"], "metadata": {
                            "name": f"{obj['metadata']['name']}-{name.lower()}"}}
                        checked.append(f"{path.name}: LeaderWorkerSet {obj['metadata']['name']} {name} ({level})")
                        create(path.name, pod, namespace)
    print(f"pod templates checked against the Pod Security Standards: {len(checked)}, of which "
          f"{sum('(privileged)' in c for c in checked)} at privileged")
    assert any("(privileged)" in c for c in checked) and any("(restricted)" in c for c in checked)
    assert not violations, "\n".join(violations[:20])
