"""Multi-node serving: the LeaderWorkerSet render, the launcher's RBAC, the leader's mpirun
command line (through the real `kiln-runtime serve --dry-run`), and the planner's refusals."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from kiln.api import parse_service_spec
from kiln.errors import SpecInvalid
from kiln.planner import resolve_parallelism
from kiln.render import ServiceRef, render
from kiln.render.meta import LABEL_COMPONENT
from kiln.toolchain import NGC_ENTRYPOINT

from ..conftest import ROOT
from ..support import crd_schemas
from ..support.planning import catalog_model, planned

EXAMPLE = yaml.safe_load((ROOT / "examples" / "llama-3.1-405b-fp8-multinode.yaml").read_text())


def _render(**spec_changes):
    spec = parse_service_spec({**EXAMPLE["spec"], **spec_changes})
    result, gpu = planned(spec)
    assert result.fits is True, result.reasons
    return render(ServiceRef("llama-405b", "llm", "uid-1"), spec, result, gpu)


def test_a_16_gpu_service_on_8_gpu_nodes_is_a_leader_worker_set_of_size_2():
    rendered = _render()
    lws = rendered.workload
    assert lws["kind"] == "LeaderWorkerSet" and lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    crd_schemas.validate(lws)
    spec = lws["spec"]
    assert spec["startupPolicy"] == "LeaderCreated"
    template = spec["leaderWorkerTemplate"]
    assert template["size"] == 2 and template["restartPolicy"] == "RecreateGroupOnPodRestart"
    for role in ("leaderTemplate", "workerTemplate"):
        pod = template[role]["spec"]
        [container] = pod["containers"]
        assert container["resources"]["limits"] == {"nvidia.com/gpu": "8"}
        assert container["command"] == [NGC_ENTRYPOINT, "kiln-runtime", "serve", f"--role={role[:-8]}"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/dev/shm", "/engines"} <= mounts
        serve = json.loads(next(e["value"] for e in container["env"] if e["name"] == "KILN_SERVE_SPEC"))
        assert (serve["tensorParallel"], serve["pipelineParallel"], serve["gpusPerNode"]) == (8, 2, 8)
    leader, worker = template["leaderTemplate"], template["workerTemplate"]
    assert leader["spec"]["serviceAccountName"] == "llama-405b-launcher"
    assert leader["spec"]["automountServiceAccountToken"] is True
    assert worker["spec"]["automountServiceAccountToken"] is False
    assert worker["spec"]["serviceAccountName"] == "llama-405b-server"
    assert {p["name"] for p in leader["spec"]["containers"][0]["ports"]} == {"http", "grpc", "metrics", "openai"}
    assert "ports" not in worker["spec"]["containers"][0], "only rank 0 serves"
    # The Service (and the chart's PodMonitor, and the operator's scrape) select leaders only.
    selector = rendered.service["spec"]["selector"]
    assert selector[LABEL_COMPONENT] == "server"
    assert leader["metadata"]["labels"][LABEL_COMPONENT] == "server"
    assert worker["metadata"]["labels"][LABEL_COMPONENT] == "worker"
    # The build Job builds every rank on one node's GPUs.
    build_limits = rendered.build_job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert build_limits["nvidia.com/gpu"] == "8"


def test_the_launchers_rbac_grants_nothing_beyond_the_groups_pods():
    rendered = _render(autoscaling={"mode": "builtin", "minReplicas": 1, "maxReplicas": 3})
    [server] = [o for o in rendered.access if o["metadata"]["name"] == "llama-405b-server"]
    kinds = {o["kind"]: o for o in rendered.access if o is not server}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding"}
    assert all(o["metadata"]["namespace"] == "llm" for o in rendered.access)
    # The workers run as the service's own account, with no token; the leader as the launcher.
    templates = rendered.workload["spec"]["leaderWorkerTemplate"]
    assert templates["workerTemplate"]["spec"]["serviceAccountName"] == "llama-405b-server"
    assert templates["workerTemplate"]["spec"]["automountServiceAccountToken"] is False
    assert templates["leaderTemplate"]["spec"]["serviceAccountName"] == "llama-405b-launcher"
    assert server["automountServiceAccountToken"] is False
    role = kinds["Role"]
    # Worker 1 of each group up to max, and of the group a rolling update adds beside them:
    # LWS runs replicas + maxSurge groups while it rolls, the surge group at index replicas
    # (kubernetes-sigs/lws leaderworkerset_controller.go, rollingUpdateParameters).
    surge = rendered.workload["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"]["maxSurge"]
    groups = 3 + surge
    pods = [f"llama-405b-group-{g}-1" for g in range(groups)]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "resourceNames": pods, "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "resourceNames": pods, "verbs": ["create", "get"]},
        # The worker StatefulSets, named after the leader pods: the leader checks its targets.
        {"apiGroups": ["apps"], "resources": ["statefulsets"],
         "resourceNames": [f"llama-405b-group-{g}" for g in range(groups)], "verbs": ["get"]},
    ]
    leader_env = {e["name"]: e.get("valueFrom") for e in
                  templates["leaderTemplate"]["spec"]["containers"][0]["env"]}
    assert leader_env["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert "LWS_NAME" in leader_env and "LWS_GROUP_INDEX" in leader_env
    binding = kinds["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "llama-405b-launcher"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llama-405b-launcher",
                                    "namespace": "llm"}]
    assert kinds["ServiceAccount"]["automountServiceAccountToken"] is False  # the leader pod opts in


def test_single_node_services_get_their_own_account_and_no_launcher():
    spec = parse_service_spec({**EXAMPLE["spec"], "gpus": 8})
    result, gpu = planned(spec)
    rendered = render(ServiceRef("llama-405b", "llm"), spec, result, gpu)
    assert rendered.workload["kind"] == "Deployment"
    [account] = rendered.access
    assert (account["kind"], account["metadata"]["name"]) == ("ServiceAccount", "llama-405b-server")
    assert account["automountServiceAccountToken"] is False
    pod = rendered.workload["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "llama-405b-server" and pod["automountServiceAccountToken"] is False


def _dry_run(tp, pp, per_node, size):
    env = {**os.environ, "KILN_SERVE_SPEC": json.dumps({
        "engineDir": "/engines/k", "tensorParallel": tp, "pipelineParallel": pp,
        "kvCacheFreeGpuMemFraction": 0.9, "gpusPerNode": per_node})}
    out = subprocess.run([sys.executable, "-m", "kiln_runtime.cli", "serve", "--role", "leader", "--dry-run",
                          "--leader-address", "llama-405b-group-0.llama-405b-group.llm",
                          "--group-size", str(size)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return shlex.split(out.stdout)


@pytest.mark.parametrize("tp, pp", [(8, 2), (16, 1)], ids=["TP8xPP2", "TP16"])
def test_the_leader_runs_one_mpirun_over_the_group(tp, pp):
    argv = _dry_run(tp, pp, per_node=8, size=2)
    assert argv[:2] == ["mpirun", "--allow-run-as-root"]
    host = argv[argv.index("--host") + 1]
    assert host == "llama-405b-group-0.llama-405b-group.llm:8,llama-405b-group-0-1.llama-405b-group.llm:8"
    assert argv[argv.index("--mca") + 1:argv.index("--mca") + 3] == ["plm_rsh_agent", "kiln-runtime rsh"]
    assert argv[argv.index("--map-by") + 1] == "slot"  # ranks fill a node's 8 slots in order
    # The workers' ranks (started under kubectl exec, past the image's entrypoint) get the
    # library path the leader's entrypoint set up for CUDA forward compatibility.
    assert argv[argv.index("-x") + 1] == "LD_LIBRARY_PATH"
    ranks = " ".join(argv).split(" -n 1 ")[1:]
    assert len(ranks) == tp * pp == 16  # world size
    for rank, segment in enumerate(ranks):
        assert f"--id=rank{rank}" in segment
        serves = "--http-port=8000" in segment and "--metrics-port=8002" in segment
        assert serves == (rank == 0), "HTTP, gRPC and metrics on rank 0 only"
        if rank:
            assert "--allow-http=false" in segment and "--allow-metrics=false" in segment


def test_a_group_that_does_not_match_the_engine_is_refused():
    env = {**os.environ, "KILN_SERVE_SPEC": json.dumps({
        "engineDir": "/engines/k", "tensorParallel": 8, "pipelineParallel": 2,
        "kvCacheFreeGpuMemFraction": 0.9, "gpusPerNode": 8})}
    out = subprocess.run([sys.executable, "-m", "kiln_runtime.cli", "serve", "--role", "leader", "--dry-run",
                          "--leader-address", "a.b.llm", "--group-size", "3"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "3 pods x 8 GPUs" in out.stderr and "16 ranks" in out.stderr and "Traceback" not in out.stderr


def test_a_worker_without_lws_env_gets_one_clear_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LWS_")}
    env["KILN_SERVE_SPEC"] = json.dumps({"engineDir": "/e", "tensorParallel": 8, "pipelineParallel": 2,
                                         "kvCacheFreeGpuMemFraction": 0.9, "gpusPerNode": 8})
    out = subprocess.run([sys.executable, "-m", "kiln_runtime.cli", "serve", "--role", "worker", "--dry-run"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "LWS_LEADER_ADDRESS" in out.stderr


@pytest.mark.parametrize("changes, message", [
    ({"gpus": 12}, "must be a multiple of gpu.perNode=8"),
    ({"parallelism": {"tensor": 4, "pipeline": 4}}, "does not divide the model's 126 layers"),
    ({"runtime": {"server": "djl"}}, "djl serves one node per replica"),
])
def test_layouts_that_cannot_be_placed_are_refused_with_the_reason(changes, message):
    with pytest.raises(SpecInvalid) as error:
        spec = parse_service_spec({**EXAMPLE["spec"], **changes})
        resolve_parallelism(spec, catalog_model(spec.model.source))
    assert message in str(error.value)


def _fake_kubectl(tmp_path, exit_code):
    log = tmp_path / "kubectl.log"
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    f"sys.exit({exit_code})\n")
    fake.chmod(0o755)
    return fake, log


def test_rsh_starts_mpiruns_daemon_in_the_worker_pod_by_kubectl_exec(monkeypatch):
    from kiln_runtime.group import rsh_argv

    monkeypatch.setenv("POD_NAMESPACE", "llm")
    monkeypatch.setenv("KILN_KUBECTL", "kubectl")
    argv = rsh_argv("llama-405b-group-0-1.llama-405b-group.llm", ["orted", "-mca", "ess", "env"])
    assert argv == ["kubectl", "exec", "-n", "llm", "llama-405b-group-0-1", "-c", "server", "--",
                    "/bin/sh", "-c", "orted -mca ess env"]


def test_the_leader_waits_until_every_worker_takes_an_exec(tmp_path, monkeypatch):
    from kiln_runtime import group as group_module
    from kiln_runtime.errors import StepFailed

    monkeypatch.setenv("POD_NAMESPACE", "llm")
    monkeypatch.setattr(group_module.socket, "getaddrinfo", lambda host, port: [("resolved",)])
    # Whose pods they are is test_launcher_targets.py's; here every worker is the group's.
    monkeypatch.setattr(group_module, "check_worker", lambda host, missing_ok=False: True)
    group = group_module.Group("g-0.g.llm", 3, 8)
    fake, log = _fake_kubectl(tmp_path, 0)
    monkeypatch.setenv("KILN_KUBECTL", str(fake))
    group_module.wait_for_workers(group, timeout=5, poll=0.01)
    assert log.read_text().splitlines() == [f"exec -n llm g-0-{i} -c server -- /bin/sh -c true" for i in (1, 2)]

    fake, _ = _fake_kubectl(tmp_path, 1)
    monkeypatch.setenv("KILN_KUBECTL", str(fake))
    with pytest.raises(StepFailed, match="g-0-1.g.llm, g-0-2.g.llm"):
        group_module.wait_for_workers(group, timeout=0, poll=0.01)
