"""What the API server accepts in the objects Kiln renders from a service, as bounds on the
service's own fields: the CRD's CEL rules and the pydantic validators both read them here."""

from __future__ import annotations

__all__ = ["MAX_WINDOW_SECONDS", "MAX_WORKER_PODS", "SERVICE_NAME_PATTERN",
           "extended_resource_problem"]

# The longest scale-down stabilisation window an HorizontalPodAutoscaler accepts
# (kubernetes pkg/apis/autoscaling/validation/validation.go, MaxStabilizationWindowSeconds);
# KEDA hands its window to an HPA, so the same bound holds there.
MAX_WINDOW_SECONDS = 3600
# Worker pods of a multi-node service, each named twice in its launcher Role (with each
# group's leader once more, at most as many, and a rolling update's surge group besides: at
# most 63 workers more): 4000 keeps the Role under 0.8 MB, well inside etcd's default request limit of 1.5 MiB
# (etcd server/embed/config.go, DefaultMaxRequestBytes), which bounds every stored object.
MAX_WORKER_PODS = 4000
# An LLMService's own name: a DNS-1035 label (see the root rule in crd.py for why).
SERVICE_NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def extended_resource_problem(name: str) -> str | None:
    """Why a container cannot request ``name`` as an extended resource, or None.

    The API server's rules (kubernetes pkg/apis/core/v1/helper/helpers.go,
    IsExtendedResourceName): not in the ``kubernetes.io/`` namespace, no ``requests.`` prefix,
    and ``requests.<name>`` must be a qualified name (prefix at most 253, name at most 63)."""
    if "kubernetes.io/" in name:
        return "is in the reserved kubernetes.io/ namespace"
    if name.startswith("requests."):
        return "must not start with the reserved prefix requests."
    prefix, _, rest = name.partition("/")
    if len("requests." + prefix) > 253 or len(rest) > 63:
        return "must have a domain of at most 244 characters and a name of at most 63"
    return None
