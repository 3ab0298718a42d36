"""With ``watchNamespaces`` set, the chart's ValidatingAdmissionPolicy refuses an LLMService
created in a namespace no release serves, on the real API server, saying where to create it;
one in a served namespace is admitted. Without it, such a service got no status at all."""

from __future__ import annotations

import copy
import time

from kiln.controller.kube import Kind

from ..support.cluster import chart_manifests
from .test_operator import MISTRAL

SERVED, OTHER_RELEASE, UNSERVED = "vap-served", "vap-other", "vap-unserved"


def _policy_kind(obj):
    plural = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies",
              "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}[obj["kind"]]
    return Kind(obj["apiVersion"], obj["kind"], plural, False)


def _refusal(plane, namespace):
    """The API server's answer to a (dry-run) creation of an LLMService in ``namespace``:
    None when admitted, else its text."""
    service = copy.deepcopy(MISTRAL)
    service["metadata"]["namespace"] = namespace
    try:
        plane.apply(service, dry_run=True)
    except RuntimeError as refused:
        return str(refused)
    return None


def test_a_service_where_no_release_serves_is_refused_saying_where_to_create_it(real_plane):
    plane = real_plane
    values = {"watchNamespaces": [SERVED], "admissionPolicy": {"otherReleasesNamespaces": [OTHER_RELEASE]}}
    policy = [o for o in chart_manifests(values) if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert [o["kind"] for o in policy] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    for name in (SERVED, OTHER_RELEASE, UNSERVED):
        plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    for obj in policy:
        plane.apply(obj, plural=_policy_kind(obj).plural)
    try:
        # The API server compiles a new policy and starts enforcing it within a moment.
        deadline, said = time.monotonic() + 30, None
        while said is None and time.monotonic() < deadline:
            said = _refusal(plane, UNSERVED)
            time.sleep(0.2)
        assert said is not None, "the policy never refused a service in an unserved namespace"
        assert f"namespace {UNSERVED} is not served by the Kiln operator" in said, said
        assert f"serves {SERVED}, {OTHER_RELEASE}" in said and "watchNamespaces" in said, said
        assert _refusal(plane, SERVED) is None
        assert _refusal(plane, OTHER_RELEASE) is None
    finally:
        for obj in reversed(policy):
            plane.http.delete(plane.server + _policy_kind(obj).path(None, obj["metadata"]["name"]), timeout=30)
        # The API server drops a deleted policy at its next refresh (up to a second, as it
        # takes one up): the next test's services, in namespaces of their own, must not meet it.
        deadline = time.monotonic() + 30
        while _refusal(plane, UNSERVED) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        for name in (SERVED, OTHER_RELEASE, UNSERVED):
            plane.http.delete(plane.server + f"/api/v1/namespaces/{name}", timeout=30)
