"""The inter-node fabric of a multi-node replica (``spec.network``).

NCCL finds InfiniBand/RoCE/EFA through the verbs devices the RDMA device plugin puts in the
pod, and registers (pins) its buffers, which needs ``IPC_LOCK`` once the locked-memory limit
is reached. Without ``spec.network`` nothing is added: NCCL falls back to TCP sockets between
nodes and the pods keep Pod Security "restricted" (which allows no capability but
NET_BIND_SERVICE), so this is opt-in and the plan says when a multi-node service runs
without it.
"""

from __future__ import annotations

from typing import Any

from ..api import LLMServiceSpec

__all__ = ["IPC_LOCK", "with_network"]

IPC_LOCK = "IPC_LOCK"


def with_network(container: dict[str, Any], spec: LLMServiceSpec) -> dict[str, Any]:
    """``container`` with the RDMA resource, IPC_LOCK and the NCCL settings of
    ``spec.network``; unchanged when it is not set."""
    network = spec.network
    if network.rdma_resource is None:
        return container
    resources = container["resources"]
    count = str(network.rdma_count)
    resources["requests"][network.rdma_resource] = count
    resources["limits"][network.rdma_resource] = count
    security = container["securityContext"]
    security["capabilities"] = {**security["capabilities"], "add": [IPC_LOCK]}
    container["env"] = [*container.get("env", []),
                        *({"name": var.name, "value": var.value} for var in network.nccl_env)]
    return container
