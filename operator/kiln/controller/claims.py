"""Who claims a served model name on a Gateway: the ``status.gatewayClaim`` of every
LLMService the operator watches, in a kopf index kept by the LLMService watch.

A Gateway sends a request to the HTTPRoute that matches it; on a tie across routes, to "the
oldest Route based on creation timestamp" (Gateway API ``apis/v1/httproute_types.go``,
``HTTPRouteRule``'s matching precedence). Two services serving one model name on one
Gateway would tie, and the older route would take the other's prompts: a tenant who attaches
first, or whose old service takes another's name, receives them. So one name on one Gateway
is one service's (llm-d's ModelService: the model name is "globally unique ... unless they
target different gateways"): the oldest claim keeps it, and decide stalls a later one
(``ModelNameInUse``) and withdraws its route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ..api import API_VERSION, GROUP, VERSION
from ..api.llmservice import GatewayClaim
from .kube import KubeApi

__all__ = ["CLAIMS_INDEX", "register_claims", "gateway_claims", "claim_of"]

CLAIMS_INDEX = "kiln_cache_gateway_claims"  # cache.py hands every "kiln_cache_" index on


def claim_of(service: Mapping[str, Any]) -> tuple[tuple[str, str], tuple[str, str, str]] | None:
    """((gateway, model), (since, namespace, name)) of a service's recorded claim, or None
    (none recorded, or not in the claim's shape)."""
    raw = (service.get("status") or {}).get("gatewayClaim")
    if not isinstance(raw, dict):
        return None
    try:
        claim = GatewayClaim.model_validate(raw)
    except ValueError:
        return None
    meta = service.get("metadata") or {}
    return (claim.gateway, claim.model), (claim.since, str(meta.get("namespace")), str(meta.get("name")))


def register_claims(registry: kopf.OperatorRegistry) -> None:
    async def index(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        found = claim_of(body)
        return {} if found is None else dict([found])

    kopf.index(GROUP, VERSION, "llmservices", id=CLAIMS_INDEX, registry=registry)(index)


async def gateway_claims(api: KubeApi, gateway: str, model: str, namespace: str,
                         name: str) -> tuple[tuple[str, str, str], ...]:
    """The other services' claims of ``model`` on ``gateway``, from the index the reconcile's
    ``api`` carries (controller/cache.py ``CachedKubeApi``), or else from a list of every
    LLMService (a caller outside the operator's handlers, with the rights to list them)."""
    claims = getattr(api, "claims", None)
    if claims is not None:
        found = list(claims.get((gateway, model), ()))
    else:
        found = [holder for key, holder in filter(None, map(claim_of, await api.list(API_VERSION, "LLMService")))
                 if key == (gateway, model)]
    return tuple(sorted(holder for holder in found if holder[1:] != (namespace, name)))
