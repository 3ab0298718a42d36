"""What an LLMService author cannot do to objects outside their service, on both back-ends.

An author with only ``create`` on LLMServices picks names so that a child's name is an
object that already exists (a Service, a ServiceAccount bound to ``admin``): the operator
must not rewrite it, must not give it an owner reference (deleting the LLMService would
then delete it), and must say which object is in the way.
"""

from __future__ import annotations

import copy

import yaml

from kiln.decide.conditions import get_condition, is_true
from kiln.decide.policy import Policy

from ..conftest import ROOT
from ..support.cluster import chart_rbac
from ..support.faults import FlakyEmulator

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
MULTI_NODE = yaml.safe_load((ROOT / "examples" / "llama-3.1-405b-fp8-multinode.yaml").read_text())


def _conditions(obj):
    return (obj.get("status") or {}).get("conditions", [])


def _named(manifest, name):
    manifest = copy.deepcopy(manifest)
    manifest["metadata"] = {"name": name, "namespace": NS}
    return manifest


def _multi_node_namespace(sb, backend):
    """On ``real`` the chart grants the leader's Role only in ``multiNode.namespaces``: list NS."""
    if backend == "real":
        sb.grant_chart_roles(NS, multi_node=True)


def _written(sb, plural):
    """The objects of ``plural`` in the sandbox but the chart's (its multi-node Role) and the
    namespace's default ServiceAccount."""
    chart = {o["metadata"]["name"] for o in chart_rbac({"multiNode": {"namespaces": [NS]}})
             if o["kind"] in ("Role", "RoleBinding")}
    chart.add("default")  # the ServiceAccount controller's own
    return [o for o in sb.objects(plural) if o["metadata"]["name"] not in chart]


async def _stalled(sb, name):
    def found():
        svc = sb.get("llmservices", name, NS)
        condition = svc and get_condition(_conditions(svc), "Stalled")
        return condition if condition and condition["status"] == "True" else None
    return await sb.wait_for(found, what=f"{name} Stalled")


def _untouched(obj, before):
    meta = obj["metadata"]
    assert not meta.get("ownerReferences"), f"{obj['kind']} {meta['name']} was given an owner"
    assert {k: v for k, v in obj.items() if k not in ("metadata", "status")} == \
        {k: v for k, v in before.items() if k not in ("metadata", "status")}
    assert meta.get("resourceVersion") == before["metadata"].get("resourceVersion")


async def test_a_child_name_taken_by_someone_elses_object_stalls_and_the_object_is_untouched(make_sandbox):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        theirs = await sb.create({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web-server", "namespace": NS, "labels": {"app": "web"}},
            "spec": {"type": "ClusterIP", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(_named(MISTRAL, "web"))
        stalled = await _stalled(sb, "web")
        assert stalled["reason"] == "ResourceConflict"
        assert f"Service {sb.ns(NS)}/web-server already exists" in stalled["message"]
        _untouched(sb.get("services", "web-server", NS), theirs)
        # Checked before the build: no GPU time is spent on a service that cannot be served.
        assert sb.objects("jobs") == [] and sb.objects("deployments") == []
        # kopf posts Events from a queue, after the status write they tell of: wait for it.
        await sb.wait_for(lambda: any(e.get("reason") == "ResourceConflict"
                                      and f"{sb.ns(NS)}/web-server" in e.get("message", "")
                                      for e in sb.objects("events")),
                          what="a ResourceConflict Event naming the Service")

        # Deleting the service leaves the other object in place.
        await sb.api.delete(sb.get("llmservices", "web", NS))
        await sb.wait_for(lambda: not sb.objects("llmservices"), what="the service deleted")
        _untouched(sb.get("services", "web-server", NS), theirs)

        # Once the name is free, the same manifest serves.
        await sb.api.delete(theirs)
        await sb.create(_named(MISTRAL, "web"))
        await sb.wait_for(lambda: is_true(_conditions(sb.get("llmservices", "web", NS)), "Ready"),
                          timeout=30, what="Ready once the name is free")
        assert sb.operator_error is None


async def test_a_service_account_bound_to_admin_is_never_the_launchers(make_sandbox, backend):
    """The multi-node leader runs with ``<name>-launcher``'s token: a pre-existing account of
    that name must never be taken over."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        _multi_node_namespace(sb, backend)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        account = await sb.create({"apiVersion": "v1", "kind": "ServiceAccount",
                                   "metadata": {"name": "ci-launcher", "namespace": NS}})
        binding = await sb.create({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "ci-launcher", "namespace": NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "ci-launcher", "namespace": NS}]})
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(_named(MULTI_NODE, "ci"))
        stalled = await _stalled(sb, "ci")
        assert stalled["reason"] == "ResourceConflict"
        assert f"ServiceAccount {sb.ns(NS)}/ci-launcher" in stalled["message"] or \
            f"RoleBinding {sb.ns(NS)}/ci-launcher" in stalled["message"]
        _untouched(sb.get("serviceaccounts", "ci-launcher", NS), account)
        _untouched(sb.get("rolebindings", "ci-launcher", NS), binding)
        assert sb.objects("leaderworkersets") == [] and sb.objects("jobs") == []
        await sb.api.delete(sb.get("llmservices", "ci", NS))
        await sb.wait_for(lambda: not sb.objects("llmservices"), what="the service deleted")
        assert sb.get("serviceaccounts", "ci-launcher", NS) is not None
        assert sb.operator_error is None


async def test_an_object_controlled_by_another_service_is_a_conflict_too(make_sandbox):
    """Kiln's own labels and another LLMService's owner reference do not make it this one's."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(_named(MISTRAL, "a"))
        await sb.wait_for(lambda: is_true(_conditions(sb.get("llmservices", "a", NS)), "Ready"),
                          timeout=30, what="a Ready")
        # A copy of a's Service under the name b's would have, still controlled by a.
        mine = copy.deepcopy(sb.get("services", "a-server", NS))
        mine["metadata"] = {k: v for k, v in mine["metadata"].items()
                            if k in ("labels", "annotations", "ownerReferences")}
        mine["metadata"].update(name="b-server", namespace=NS)
        mine["spec"] = {k: v for k, v in mine["spec"].items() if k not in ("clusterIP", "clusterIPs")}
        before = await sb.create(mine)
        await sb.create(_named(MISTRAL, "b"))
        stalled = await _stalled(sb, "b")
        assert stalled["reason"] == "ResourceConflict"
        assert f"Service {sb.ns(NS)}/b-server" in stalled["message"] and "LLMService a" in stalled["message"]
        after = sb.get("services", "b-server", NS)
        assert after["metadata"]["ownerReferences"] == before["metadata"]["ownerReferences"]
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert sb.operator_error is None


GATED = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8.yaml").read_text())


async def _ready(sb, name):
    await sb.wait_for(lambda: is_true(_conditions(sb.get("llmservices", name, NS) or {}), "Ready"),
                      timeout=30, what=f"{name} Ready")


async def test_an_engine_built_with_a_token_serves_no_service_without_credentials(make_sandbox):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        await sb.add_secret(NS, "other", {"NOT_A_TOKEN": "x"})
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(_named(GATED, "entitled"))
        await _ready(sb, "entitled")
        freeloader = _named(GATED, "freeloader")
        del freeloader["spec"]["model"]["credentials"]
        await sb.create(freeloader)
        stalled = await _stalled(sb, "freeloader")
        assert stalled["reason"] == "CredentialsRequired"
        assert "hf://meta-llama/Llama-3.1-8B-Instruct" in stalled["message"]
        assert "spec.model.credentials.secretName" in stalled["message"]
        wrong = _named(GATED, "wrong-secret")
        wrong["spec"]["model"]["credentials"] = {"secretName": "other"}
        await sb.create(wrong)
        assert (await _stalled(sb, "wrong-secret"))["reason"] == "CredentialsRequired"
        assert sb.get("deployments", "freeloader-server", NS) is None
        assert sb.get("deployments", "wrong-secret-server", NS) is None
        assert not any(e.get("reason") == "EngineReused" for e in sb.objects("events")
                       if e["involvedObject"]["name"] in ("freeloader", "wrong-secret"))
        assert sb.operator_error is None


async def test_a_model_the_platform_team_made_public_is_served_without_credentials(make_sandbox):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                       policy=Policy(public_models=frozenset({GATED["spec"]["model"]["source"]}))) as sb:
        sb.add_namespace(NS)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(_named(GATED, "entitled"))
        await _ready(sb, "entitled")
        public = _named(GATED, "public")
        del public["spec"]["model"]["credentials"]
        await sb.create(public)
        await _ready(sb, "public")
        assert len(sb.objects("jobs")) == 1, "one engine, built once"


async def test_a_secret_the_operator_may_not_read_stalls_naming_the_setting(make_sandbox, backend):
    """On ``real`` the chart's RBAC (``modelCredentials.secretNames: [hf-token]``) refuses the
    read; on the emulator the fault injector answers 403 as RBAC would."""
    emulator = FlakyEmulator() if backend == "emulator" else None
    options = {"emulator": emulator} if emulator is not None else {}
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2, **options) as sb:
        sb.add_namespace(NS)
        await sb.add_secret(NS, "kube-secrets", {"HF_TOKEN": "hf_test"})
        if emulator is not None:
            emulator.forbidden.add("secrets")
        await sb.start_operator()
        manifest = _named(GATED, "reader")
        manifest["spec"]["model"]["credentials"] = {"secretName": "kube-secrets"}
        await sb.create(manifest)
        stalled = await _stalled(sb, "reader")
        assert stalled["reason"] == "CredentialsRequired"
        assert f"{sb.ns(NS)}/kube-secrets" in stalled["message"] and "modelCredentials.secretNames" in stalled["message"]
        assert sb.objects("jobs") == []
        assert sb.operator_error is None


async def test_a_multi_node_service_outside_the_multi_node_namespaces_stalls_naming_the_setting(
        make_sandbox, backend):
    """On ``real`` the chart grants Roles only in ``multiNode.namespaces``; on the emulator the
    fault injector answers 403 as RBAC would."""
    emulator = FlakyEmulator() if backend == "emulator" else None
    options = {"emulator": emulator} if emulator is not None else {}
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2, **options) as sb:
        sb.add_namespace(NS)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        if emulator is not None:
            emulator.forbidden |= {"roles", "rolebindings"}  # what RBAC answers outside them
        await sb.start_operator()
        await sb.create(copy.deepcopy(MULTI_NODE))
        stalled = await _stalled(sb, MULTI_NODE["metadata"]["name"])
        assert stalled["reason"] == "MissingDependency" and "multiNode.namespaces" in stalled["message"]
        assert sb.objects("leaderworkersets") == [] and sb.objects("jobs") == []
        assert sb.operator_error is None


async def test_an_llmengine_with_the_name_but_another_key_is_a_conflict_not_a_cache_hit(make_sandbox):
    """Names carry a digest of the key; the operator compares the full key before using a
    record, so a record someone made under that name (Ready, with another key) serves nothing."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(_named(MISTRAL, "first"))
        await _ready(sb, "first")
        [engine] = sb.objects("llmengines")
        name, key = engine["metadata"]["name"], engine["spec"]["key"]
        # The same name in a fresh cluster, holding another key.
        await sb.api.delete(sb.get("llmservices", "first", NS))
        await sb.wait_for(lambda: not sb.objects("llmservices"), what="first deleted")
        await sb.api.delete(engine)
        forged = {"apiVersion": engine["apiVersion"], "kind": "LLMEngine", "metadata": {"name": name},
                  "spec": {**engine["spec"], "key": "0" * 64}}
        created = await sb.api.apply(forged)
        await sb.api.patch_status(created, {"conditions": [
            {"type": "Ready", "status": "True", "reason": "EngineBuilt", "message": "",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        jobs_before = len(sb.objects("jobs"))
        await sb.create(_named(MISTRAL, "second"))
        stalled = await _stalled(sb, "second")
        assert stalled["reason"] == "ResourceConflict" and f"LLMEngine {name}" in stalled["message"]
        assert key[:16] in stalled["message"]
        assert sb.get("deployments", "second-server", NS) is None
        assert len(sb.objects("jobs")) == jobs_before
        assert sb.operator_error is None


async def test_a_multi_node_leader_runs_kilns_image_unless_the_platform_team_allows_others(make_sandbox, backend):
    """The leader's token may exec into pods named like its workers: the code that holds it
    is Kiln's runtime, not an image the author chose, unless the platform team says so."""
    custom = _named(MULTI_NODE, "custom")
    custom["spec"]["runtime"] = {"image": "registry.example/own-image:1"}
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        _multi_node_namespace(sb, backend)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        await sb.start_operator()
        await sb.create(copy.deepcopy(custom))
        stalled = await _stalled(sb, "custom")
        assert stalled["reason"] == "SpecInvalid" and stalled["message"].startswith("spec.runtime.image:")
        assert "multiNode.customImages" in stalled["message"]
        assert sb.objects("jobs") == [] and _written(sb, "roles") == [] and _written(sb, "serviceaccounts") == []
        assert sb.operator_error is None
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                       policy=Policy(multi_node_custom_images=True)) as sb:
        sb.add_namespace(NS)
        _multi_node_namespace(sb, backend)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(copy.deepcopy(custom))
        await _ready(sb, "custom")
        [lws] = sb.objects("leaderworkersets")
        leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
        assert leader["image"] == "registry.example/own-image:1"


async def test_a_pod_named_like_a_worker_that_is_not_the_groups_gets_no_launcher_role(make_sandbox, backend):
    """RBAC matches the launcher Role's pod names only: a pod someone else made under a worker's
    name (here a StatefulSet ``ci-group-0`` of theirs, whose pod is ``ci-group-0-1``) would be
    exec-able by the leader. The operator refuses to write that Role, naming the pod."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        _multi_node_namespace(sb, backend)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        sts = await sb.create({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "ci-group-0", "namespace": NS},
            # OnDelete: a real StatefulSet controller would otherwise replace the pod made below
            # (it has no revision label), and the operator could reconcile in that gap.
            "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                     "updateStrategy": {"type": "OnDelete"},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}})
        # Labels copied from an LWS worker do not make it one (nor its size annotation, which
        # LWS's Pod webhook requires of any Pod with its name label: kubernetes-sigs/lws,
        # pkg/webhooks/pod_webhook.go ``Default``).
        await sb.create({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "ci-group-0-1", "namespace": NS,
                         "labels": {"app": "db", "leaderworkerset.sigs.k8s.io/name": "ci-group",
                                    "leaderworkerset.sigs.k8s.io/group-index": "0"},
                         "annotations": {"leaderworkerset.sigs.k8s.io/size": "2"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                              "name": "ci-group-0", "uid": sts["metadata"]["uid"],
                                              "controller": True}]},
            "spec": {"containers": [{"name": "db", "image": "db:1"}]}})
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(_named(MULTI_NODE, "ci"))
        stalled = await _stalled(sb, "ci")
        assert stalled["reason"] == "ResourceConflict"
        assert f"Pod {sb.ns(NS)}/ci-group-0-1" in stalled["message"] and "\n" not in stalled["message"]
        assert _written(sb, "roles") == [] and _written(sb, "rolebindings") == []
        assert sb.objects("leaderworkersets") == [] and sb.objects("jobs") == []
        assert sb.operator_error is None
