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
group's worker pods and ``create``/``get`` on their ``pods/exec`` (by name), nothing else.
Workers run with no ServiceAccount token. A rank that dies makes mpirun abort every rank and
exit non-zero, the leader container exits with it, and LWS (``RecreateGroupOnPodRestart``)
recreates the whole group.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import toolchain
from .errors import BadSpec, StepFailed

__all__ = ["Group", "group_from_env", "rsh_argv", "wait_for_workers", "wait_forever",
           "mark_ready", "CONTAINER", "READY_FILE"]

CONTAINER = "server"
# Written by a worker once its model repository is complete: the leader's ranks on that
# worker read the repository the moment mpirun starts them.
READY_FILE = ".kiln-worker-ready"
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


def pod_of(host: str) -> str:
    return host.split(".", 1)[0].split(":", 1)[0]


def _namespace() -> str:
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    try:
        return _NAMESPACE_FILE.read_text().strip()
    except OSError:
        raise BadSpec("POD_NAMESPACE is not set and no ServiceAccount namespace is mounted") from None


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
    while pending:
        still = []
        for host in pending:
            try:
                socket.getaddrinfo(host, None)
                ok = subprocess.run(rsh_argv(host, probe), capture_output=True, timeout=30).returncode == 0
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


def wait_forever() -> int:
    """A worker's main process: its ranks arrive through the leader's mpirun. Exit on SIGTERM."""
    stop = {"now": False}

    def handle(signum: int, _frame: object) -> None:
        stop["now"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
    print("[group] worker ready; ranks are started by the leader", file=sys.stderr, flush=True)
    while not stop["now"]:
        time.sleep(1)
    return 0
