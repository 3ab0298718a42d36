"""The chart grants exactly what the operator uses, on both back-ends.

The operator runs a scenario that takes each path that talks to the API: a gated model
(Secret read), builtin scaling (pods listed to scrape them, a scale-up), keda, hpa and
keda-http modes (their objects applied), a multi-node service (LeaderWorkerSet, the leader's
ServiceAccount, Role and RoleBinding) with a NetworkPolicy, drift in every owned object
(re-applied as a patch), a second service joining a build Job's owners, a build pod the
namespace's quota refuses (its Events read), Events, and spec changes that leave each kind of
child unwanted (deleted). The operator's requests (told apart by its token or ServiceAccount) must equal
the rules of the chart's cluster-wide ClusterRole. The namespaced mode's Role and ClusterRole
split the same rules (tests/unit/test_chart.py).

Where the requests come from: on ``emulator``, its audit, which records each as the RBAC verb
the API server would authorize (a server-side apply that creates an object counts as
``create``); on ``real``, kube-apiserver's own audit log (``tests/support/audit.py``), where
the operator authenticates as the chart's ServiceAccount and the chart's RBAC is enforced: a
request it does not grant is a 403 there, which the test refuses too. The real server also
shows requests the emulator cannot (kopf's, the Kubernetes client's, the real controllers'
effects), so the least-privilege half, granted but never used, is checked on what a real
cluster sees.
"""

from __future__ import annotations

import copy

import helm_python as helm
import yaml

from kiln.decide.conditions import is_true
from kiln.demo.login import OPERATOR_TOKEN
from kiln.render import SPEC_HASH_ANNOTATION

from ..conftest import ROOT
from ..support.audit import AuditLog, as_entry
from ..support.real_cluster import KINDS_BY_PLURAL, OPERATOR_USER

NS = "llm"
LLAMA = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8.yaml").read_text())
OWNED = ("deployments", "services", "scaledobjects", "horizontalpodautoscalers", "leaderworkersets",
         "serviceaccounts", "roles", "rolebindings", "networkpolicies", "configmaps", "inferencepools",
         "httproutes", "httpscaledobjects", "poddisruptionbudgets")
MULTI_NODE = yaml.safe_load((ROOT / "examples" / "llama-3.1-405b-fp8-multinode.yaml").read_text())
GATEWAY = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8-gateway.yaml").read_text())


def chart_rules() -> list[dict]:
    """The rules that apply in the scenario's namespace: the cluster-wide ClusterRole's, and
    the multi-node and gateway Roles' there (the scenario runs a service of each)."""
    manifests = helm.Chart.load(ROOT / "charts" / "kiln").render(
        {"multiNode": {"namespaces": [NS]}, "gateway": {"namespaces": [NS]}}, name="kiln",
        namespace="kiln-system")
    objects = [d for path, text in manifests.items() if path.endswith(".yaml")
               for d in yaml.safe_load_all(text) if d]
    [role] = [o for o in objects if o["kind"] == "ClusterRole"]
    scoped = [o for o in objects if o["kind"] == "Role" and o["metadata"]["namespace"] == NS]
    assert len(scoped) == 2
    return role["rules"] + [rule for o in scoped for rule in o["rules"]]


def chart_grants() -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in chart_rules() for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def _owners(job):
    return sorted(ref["name"] for ref in ((job or {}).get("metadata") or {}).get("ownerReferences") or [])


def _ready_message(sb, name):
    conditions = ((sb.get("llmservices", name, NS) or {}).get("status") or {}).get("conditions") or []
    return next((str(c.get("message")) for c in conditions if c.get("type") == "Ready"), "")


def _service(name, mode, **extra):
    manifest = copy.deepcopy(LLAMA)
    manifest["metadata"] = {"name": name, "namespace": NS}
    manifest["spec"]["autoscaling"] = {"mode": mode, "minReplicas": 1, "maxReplicas": 3,
                                       "targetKVCacheUtilization": 0.75, **extra}
    return manifest


async def test_the_charts_rbac_is_exactly_what_the_operator_uses(make_sandbox, backend):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.2, retry_delay=0.2, autoscale_period=0.3,
                            autoscale_timing={"window_seconds": 1.0, "stale_seconds": 1.0},
                            timings={"resync_period": 0.5, "engine_sweep_period": 0.5,
                                     "engine_grace": 1.0}) as sb:
        log = AuditLog(sb.plane.audit_log) if backend == "real" else None
        sb.add_namespace(NS)
        if backend == "real":  # as the chart's values at the top of this file list NS
            sb.grant_chart_roles(NS, multi_node=True, gateway=True)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        await sb.start_operator()
        # A second service waiting on the build joins its Job's owners, and leaves them with
        # its deletion. Then an edit mid-build (no kubelet yet: the build runs on): the
        # superseded build Job is deleted, and its engine record collected once unreferenced.
        quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods", "namespace": sb.ns(NS)},
                 "spec": {"hard": {"pods": "0"}}}
        if backend == "real":  # the build's pod refused: the operator reads the Job's Events to say why
            sb.plane.apply(quota, plural="resourcequotas")
        await sb.create(_service("edited", "none"))
        [first] = await sb.wait_for(lambda: sb.objects("jobs"), what="the first build")
        [engine] = sb.objects("llmengines")
        if backend == "real":
            await sb.wait_for(lambda: "exceeded quota" in _ready_message(sb, "edited"), timeout=30,
                              what="the refused build pod said")
            sb.plane.delete(quota)
        await sb.create(_service("joins", "none"))
        await sb.wait_for(lambda: _owners(sb.get("jobs", first["metadata"]["name"], NS)) == ["edited", "joins"],
                          what="the second service one of the build Job's owners")
        await sb.api.delete(sb.get("llmservices", "joins", NS))
        await sb.wait_for(lambda: _owners(sb.get("jobs", first["metadata"]["name"], NS)) == ["edited"],
                          timeout=60, what="the garbage collector done with the second service")
        await sb.patch_spec(NS, "edited", {"engine": {"maxBatchSize": 32}})
        await sb.wait_for(lambda: sb.get("jobs", first["metadata"]["name"], NS) is None,
                          what="the superseded build deleted")
        await sb.wait_for(lambda: engine["metadata"]["name"] not in
                          [e["metadata"]["name"] for e in sb.objects("llmengines")], timeout=20,
                          what="the superseded engine collected")
        sb.start_kubelet()
        names = {"builtin": "scaled", "keda": "keda-scaled", "hpa": "hpa-scaled",
                 "keda-http": "wakes"}
        for mode, name in names.items():
            await sb.create(_service(name, mode))
        names["none"] = "edited"
        multi_node = copy.deepcopy(MULTI_NODE)
        multi_node["spec"]["networkPolicy"] = {"enabled": True, "metricsNamespaces": ["monitoring"]}
        await sb.create(multi_node)
        names["multi-node"] = MULTI_NODE["metadata"]["name"]
        await sb.create(copy.deepcopy(GATEWAY))
        names["gateway"] = GATEWAY["metadata"]["name"]

        def all_ready():
            return all((s := sb.get("llmservices", n, NS)) and is_true(
                (s.get("status") or {}).get("conditions", []), "Ready") for n in names.values())
        await sb.wait_for(all_ready, timeout=90, what="six Ready services")
        sb.cluster.load["scaled"] = 1.8
        await sb.wait_for(lambda: sb.get("deployments", "scaled-server", NS)["spec"]["replicas"] > 1,
                          timeout=30, what="a scale-up")

        # Drift: someone edits every object Kiln applied (those with its spec hash: a real
        # namespace also holds its default ServiceAccount, kube-root-ca.crt and the chart's
        # Roles); the next reconcile applies it back.
        drifted = [(plural, obj["metadata"]["namespace"], obj["metadata"]["name"]) for plural in OWNED
                   for obj in sb.objects(plural) if SPEC_HASH_ANNOTATION in (obj["metadata"].get("annotations") or {})]
        assert {plural for plural, _, _ in drifted} == set(OWNED)
        for plural, namespace, name in drifted:
            await sb.api.request("PATCH", KINDS_BY_PLURAL[plural].path(namespace, name),
                                 {"metadata": {"annotations": {SPEC_HASH_ANNOTATION: None}}},
                                 content_type="application/merge-patch+json")
        for name in names.values():
            await sb.patch_spec(NS, name, {"autoscaling": {"targetKVCacheUtilization": 0.7}})

        def restored():
            return all(SPEC_HASH_ANNOTATION in ((sb.get(plural, name, namespace) or {}).get("metadata", {})
                                                .get("annotations") or {}) for plural, namespace, name in drifted)
        await sb.wait_for(restored, timeout=30, what="drift applied back")

        roles = [role for role in sb.objects("roles")  # Kiln's (not the chart's), before they go below
                 if SPEC_HASH_ANNOTATION in (role["metadata"].get("annotations") or {})]
        # Each spec changed so that children it had are no longer asked for: deleted.
        await sb.patch_spec(NS, "keda-scaled", {"autoscaling": {"mode": "hpa"}})
        await sb.patch_spec(NS, "hpa-scaled", {"autoscaling": {"mode": "builtin"}})
        await sb.patch_spec(NS, "wakes", {"autoscaling": {"mode": "builtin"}})
        # One replica for good: its disruption budget has nothing to keep.
        await sb.patch_spec(NS, "scaled", {"autoscaling": {"mode": "none"}, "replicas": 1})
        await sb.patch_spec(NS, names["multi-node"], {"gpus": 8, "networkPolicy": {"enabled": False}})
        await sb.patch_spec(NS, names["gateway"], {"gateway": None})
        gone = [("scaledobjects", "keda-scaled"), ("horizontalpodautoscalers", "hpa-scaled"),
                ("poddisruptionbudgets", "scaled-server"),
                ("httpscaledobjects", "wakes"), ("services", "wakes-openai"),
                *((plural, f"{names['multi-node']}-launcher") for plural in ("serviceaccounts", "roles", "rolebindings")),
                ("leaderworkersets", f"{names['multi-node']}-group"), ("networkpolicies", f"{names['multi-node']}-server"),
                *((plural, f"{names['gateway']}-epp") for plural in ("serviceaccounts", "roles", "rolebindings",
                                                                    "configmaps", "deployments", "services")),
                ("inferencepools", f"{names['gateway']}-pool"), ("httproutes", f"{names['gateway']}-openai")]
        await sb.wait_for(lambda: all(sb.get(plural, name, NS) is None for plural, name in gone), timeout=30,
                          what="the children no longer asked for deleted")
        await sb.stop_operator()
        if log is None:
            requests = list(sb.emulator.audit)
        else:
            events = await log.settled_async(sb.plane)
            refused = [e for e in events if e["user"]["username"] == OPERATOR_USER
                       and (e.get("responseStatus") or {}).get("code") == 403]
            assert refused == [], "the chart refused requests the operator made"
            requests = [found for e in events if (found := as_entry(e)) is not None]

    mine = [entry for entry in requests if entry[0] == OPERATOR_TOKEN]
    used = {(group, resource, verb) for _, verb, group, resource, _, _, _ in mine}
    # Server-side apply creates or patches depending on whether the object exists, which for a
    # shared engine and its Job depends on which service's reconcile gets there first: every
    # kind the operator applies needs both.
    used |= {(group, resource, verb) for _, _, group, resource, _, applies, _ in mine if applies
             for verb in ("create", "patch")}
    # Rights the operator holds only to grant them (RBAC lets it create a Role with no more
    # than it has): the rules of the Roles it created.
    delegated = {(group, resource, verb) for role in roles for rule in role["rules"]
                 for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}
    assert delegated == {("", "pods", "get"), ("", "pods/exec", "create"), ("", "pods/exec", "get"),
                         ("apps", "statefulsets", "get"),
                         ("", "pods", "list"), ("", "pods", "watch"),
                         ("inference.networking.k8s.io", "inferencepools", "get"),
                         ("inference.networking.k8s.io", "inferencepools", "list"),
                         ("inference.networking.k8s.io", "inferencepools", "watch"),
                         *(("inference.networking.x-k8s.io", kind, verb)
                           for kind in ("inferenceobjectives", "inferencemodelrewrites")
                           for verb in ("get", "list", "watch"))}
    granted = chart_grants()
    assert (used | delegated) - granted == set(), "the operator needs rights the chart does not grant"
    assert granted - (used | delegated) == set(), "the chart grants rights the operator never uses"
    # Secrets by name only: the one the services name, which the chart's default lists.
    read = {name for _, _, _, resource, _, _, name in mine if resource == "secrets"}
    [secrets] = [rule for rule in chart_rules() if "secrets" in rule["resources"]]
    assert read == set(secrets["resourceNames"]) == {"hf-token"}
