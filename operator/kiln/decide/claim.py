"""One served model name on one Gateway is one service's (controller/claims.py says why).

A service with ``spec.gateway`` records its claim in ``status.gatewayClaim``: the Gateway,
the served model name and since when, kept while both stay the same, so that a service
waiting for a name keeps its place in line. The claim that is oldest (then by
namespace/name) routes the name; any later one is stalled (``ModelNameInUse``), its
HTTPRoute deleted if it routes that name, and looked at again every ``RETRY_SECONDS`` until the name
is free. Nothing is built or started for a stalled service, so a name that is taken costs no
GPU time. A service's own claim is never weighed against itself.
"""

from __future__ import annotations

from typing import Any

from ..api import LLMServiceSpec, Reason
from ..api.llmservice import GatewayClaim, LLMServiceStatus
from ..errors import SpecInvalid
from ..render import ServiceRef, served_model_name
from .snapshot import Actions, Cluster

__all__ = ["claim_key", "claim_gateway", "RETRY_SECONDS"]

# How often a service waiting for a model name looks again (another service's deletion does
# not reconcile it).
RETRY_SECONDS = 30.0


def claim_key(spec: LLMServiceSpec, ref: ServiceRef) -> tuple[str, str] | None:
    """(Gateway namespace/name, served model name), or None without ``spec.gateway``."""
    if spec.gateway is None:
        return None
    return f"{spec.gateway.namespace or ref.namespace}/{spec.gateway.name}", served_model_name(spec, ref.name)


def _routes(route: dict[str, Any], key: tuple[str, str]) -> bool:
    """Whether ``route`` (the service's HTTPRoute as it is) sends ``key``'s model name on
    ``key``'s Gateway: a route applied for a claim that then lost (two services that claimed
    in the same second). A route for the name the service had before a rename stays, as
    everything of a stalled service does."""
    spec = route.get("spec") or {}
    namespace = (route.get("metadata") or {}).get("namespace")
    on_gateway = any(f"{parent.get('namespace') or namespace}/{parent.get('name')}" == key[0]
                     for parent in spec.get("parentRefs") or [])
    return on_gateway and any(header.get("value") == key[1]
                              for rule in spec.get("rules") or [] for match in rule.get("matches") or []
                              for header in match.get("headers") or [])


def claim_gateway(status: LLMServiceStatus, spec: LLMServiceSpec, ref: ServiceRef, now: str, cluster: Cluster,
                  route: dict[str, Any] | None, actions: Actions) -> None:
    """Record the service's claim; stall it if an older one holds the name (``route``: its
    live HTTPRoute, deleted then if it routes the name)."""
    key = claim_key(spec, ref)
    held = status.gateway_claim
    if key is None:
        status.gateway_claim = None
        return
    if held is None or (held.gateway, held.model) != key:
        status.gateway_claim = held = GatewayClaim(gateway=key[0], model=key[1], since=now)
    mine = (held.since, ref.namespace, ref.name)
    first = min(cluster.gateway_claims, default=None)
    if first is None or mine < first:
        return
    if route is not None and _routes(route, key):
        actions.delete.append(route)
    since, namespace, name = first
    holder = f"LLMService {name}" if namespace == ref.namespace else "an LLMService in another namespace"
    raise SpecInvalid(
        f"spec.servedModelName: the model name {key[1]!r} is served on Gateway {key[0]} by {holder}, "
        f"which claimed it first ({since}); requests for it go there. Serve another name "
        f"(spec.servedModelName), use another Gateway, or remove that service: this one takes the name "
        f"once it is free (looked at again every {RETRY_SECONDS:g} s)",
        reason=Reason.MODEL_NAME_IN_USE.value, retry_after=RETRY_SECONDS)
