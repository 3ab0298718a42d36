"""Multi-node serving in a LeaderWorkerSet group: who is where, and how the leader starts
every rank.

One replica is one LWS group of ``size`` pods with ``perNode`` GPUs each. LWS gives every pod
``LWS_LEADER_ADDRESS`` (``<leader pod>.<subdomain>.<namespace>``), ``LWS_GROUP_SIZE`` and
``LWS_WORKER_INDEX``; worker ``i``'s pod is ``<leader pod>-<i>`` on the same subdomain.

The leader runs one ``mpirun`` for the whole group: ``--host`` lists every pod with
``perNode`` slots, ranks fill the slots in order, so with TensorRT-LLM's rank layout
(``rank = pp_rank * tp + tp_rank``) tensor parallelism stays inside a node and pipeline
stages are split across nodes whenever TP <= perNode (TP8xPP2 on 8-GPU nodes: one stage per
node). Rank 0 alone serves HTTP, gRPC and metrics.

Remote launcher: ``kubectl exec``, as in the Triton multi-node guides, through
``kiln-runtime rsh`` (mpirun's ``plm_rsh_agent``). It needs no sshd, no keys and no extra
privileges in the pods; the leader's ServiceAccount gets a Role limited to ``get`` on the
group's worker pods and ``create``/``get`` on their ``pods/exec`` (by name), and ``get`` on
the worker StatefulSets (by name), nothing else.

RBAC matches names only, so before any exec the leader reads the target and refuses unless it
is a worker LWS made for this very group: labels ``leaderworkerset.sigs.k8s.io/name`` and
``group-index`` of its own group, its controller a StatefulSet named after the leader pod,
and that StatefulSet's controller the leader pod itself, by UID (LWS's pod controller makes
the worker StatefulSet ``<leader pod>`` with the leader pod as controller:
kubernetes-sigs/lws, pkg/controllers/pod_controller.go). The leader learns its UID, LWS
name and group index from the downward API (``POD_UID``, ``LWS_NAME``, ``LWS_GROUP_INDEX``).
Workers run with no ServiceAccount token. A rank that dies makes mpirun abort every rank and
exit non-zero, the leader container exits with it, and LWS (``RecreateGroupOnPodRestart``)
recreates the whole group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import toolchain
from .drain import drain
from .errors import BadSpec, StepFailed

__all__ = ["Group", "group_from_env", "worker_index", "rsh_argv", "check_worker", "wait_for_workers",
           "wait_forever", "mark_ready", "CONTAINER", "READY_FILE"]

CONTAINER = "server"
# Written by a worker once its model repository is complete: the leader's ranks on that
# worker read the repository the moment mpirun starts them.
READY_FILE = ".kiln-worker-ready"
LABEL_LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LABEL_GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Group:
    leader_address: str  # <leader pod>.<subdomain>.<namespace>
    size: int  # pods in the group
    slots: int  # GPUs (MPI slots) per pod

    @property
    def hosts(self) -> list[str]:
        pod, _, domain = self.leader_address.partition(".")
        suffix = f".{domain}" if domain else ""
        return [self.leader_address] + [f"{pod}-{i}{suffix}" for i in range(1, self.size)]

    def host_list(self) -> str:
        return ",".join(f"{host}:{self.slots}" for host in self.hosts)


def group_from_env(slots: int, leader_address: str | None = None, size: int | None = None) -> Group:
    address = leader_address or os.environ.get("LWS_LEADER_ADDRESS")
    raw_size = size if size is not None else os.environ.get("LWS_GROUP_SIZE")
    if not address or raw_size is None:
        raise BadSpec("LWS_LEADER_ADDRESS and LWS_GROUP_SIZE are not set: --role leader|worker runs "
                      "in a LeaderWorkerSet pod (or pass --leader-address and --group-size)")
    try:
        group = Group(address, int(raw_size), slots)
    except ValueError:
        raise BadSpec(f"LWS_GROUP_SIZE: {raw_size!r} is not a number") from None
    if group.size < 2:
        raise BadSpec(f"LWS_GROUP_SIZE: {group.size}; a multi-node group has at least 2 pods")
    return group


def worker_index(group: Group | None = None) -> int | None:
    """This pod's ``LWS_WORKER_INDEX`` (0: the leader; LeaderWorkerSet adds it to every
    container of a group, kubernetes-sigs/lws ``LwsWorkerIndex``), or None when it is not set
    or not an index of ``group``: then the pod checks every rank's files, as a single node does."""
    try:
        index = int(os.environ.get("LWS_WORKER_INDEX", ""))
    except ValueError:
        return None
    return index if index >= 0 and (group is None or index < group.size) else None


def pod_of(host: str) -> str:
    return host.split(".", 1)[0].split(":", 1)[0]


def _namespace() -> str:
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    try:
        return _NAMESPACE_FILE.read_text().strip()
    except OSError:
        raise BadSpec("POD_NAMESPACE is not set and no ServiceAccount namespace is mounted") from None


def _read(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    result = subprocess.run([toolchain.kubectl(), "get", kind, name, "-n", namespace, "-o", "json"],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return None
    try:
        found = json.loads(result.stdout)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _controller(obj: dict[str, Any]) -> dict[str, Any]:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return {}


def check_worker(host: str, missing_ok: bool = False) -> bool:
    """Raise StepFailed unless ``host``'s pod is a worker of this leader's own LWS group;
    False if it does not exist (yet) and ``missing_ok``."""
    namespace, name = _namespace(), pod_of(host)
    mine = {key: os.environ.get(key, "") for key in ("POD_UID", "LWS_NAME", "LWS_GROUP_INDEX")}
    if not all(mine.values()):
        raise BadSpec("POD_UID, LWS_NAME and LWS_GROUP_INDEX are not set: the leader checks "
                      "each worker against them before it execs")
    where = f"pod {namespace}/{name}"

    def refuse(why: str) -> StepFailed:
        return StepFailed("group", f"{where} {why}; it is not a worker of LeaderWorkerSet "
                                   f"{mine['LWS_NAME']} group {mine['LWS_GROUP_INDEX']}, so the "
                                   f"leader does not exec into it")

    pod = _read("pod", name, namespace)
    if pod is None:
        if missing_ok:
            return False
        raise refuse("cannot be read")
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if labels.get(LABEL_LWS_NAME) != mine["LWS_NAME"] or \
            labels.get(LABEL_GROUP_INDEX) != mine["LWS_GROUP_INDEX"]:
        raise refuse(f"lacks the labels {LABEL_LWS_NAME}={mine['LWS_NAME']} and "
                     f"{LABEL_GROUP_INDEX}={mine['LWS_GROUP_INDEX']}")
    ref, leader = _controller(pod), name.rsplit("-", 1)[0]
    if ref.get("kind") != "StatefulSet" or ref.get("name") != leader:
        raise refuse(f"is not controlled by StatefulSet {leader}")
    sts = _read("statefulset", leader, namespace)
    if sts is None or (sts.get("metadata") or {}).get("uid") != ref.get("uid"):
        raise refuse(f"is controlled by a StatefulSet {leader} that cannot be read")
    owner = _controller(sts)
    if owner.get("kind") != "Pod" or owner.get("uid") != mine["POD_UID"]:
        raise refuse(f"is controlled by StatefulSet {leader}, which this leader pod does not control")
    return True


def rsh_argv(host: str, command: list[str]) -> list[str]:
    """What mpirun's remote launcher runs to start its daemon on ``host``."""
    # mpirun hands over one shell command line, split into words: rejoin it as kubessh does.
    return [toolchain.kubectl(), "exec", "-n", _namespace(), pod_of(host), "-c", CONTAINER, "--",
            "/bin/sh", "-c", " ".join(command)]


def mark_ready(repo: Path) -> Path:
    marker = repo / READY_FILE
    marker.write_text("ready\n")
    return marker


def wait_for_workers(group: Group, timeout: float, poll: float = 5.0,
                     repo: Path | None = None) -> None:
    """Until every worker resolves, accepts an exec and (with ``repo``) has written its model
    repository at the same path (or raise StepFailed)."""
    probe = ["test", "-e", str(repo / READY_FILE)] if repo is not None else ["true"]
    deadline = time.monotonic() + timeout
    pending = group.hosts[1:]
    checked: set[str] = set()
    while pending:
        still = []
        for host in pending:
            try:
                socket.getaddrinfo(host, None)
                # A pod that is not this group's is refused, not waited for.
                if host not in checked and check_worker(host, missing_ok=True):
                    checked.add(host)
                ok = host in checked and subprocess.run(rsh_argv(host, probe), capture_output=True, timeout=30).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if not ok:
                still.append(host)
        if still and time.monotonic() > deadline:
            raise StepFailed("group", f"workers not reachable after {timeout:.0f}s: {', '.join(still)}")
        if still:
            print(f"[group] waiting for {len(still)}/{group.size - 1} worker(s): {', '.join(still)}",
                  file=sys.stderr, flush=True)
            time.sleep(poll)
        pending = still
    print(f"[group] all {group.size - 1} worker(s) reachable and ready", file=sys.stderr,
          flush=True)


def wait_forever(leader_metrics: str | None = None) -> int:
    """A worker's main process: its ranks arrive through the leader's mpirun, and die with it.
    On SIGTERM it exits once the leader's metrics page (``leader_metrics``) shows no request in
    flight (kiln_runtime.drain): the group's ranks serve those requests together."""
    stop = {"signal": 0}

    def handle(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    print("[group] worker ready; ranks are started by the leader", file=sys.stderr, flush=True)
    while not stop["signal"]:
        time.sleep(1)
    if stop["signal"] == signal.SIGTERM and leader_metrics:
        drain(leader_metrics, lambda: None)
    return 0
