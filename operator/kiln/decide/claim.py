"""One served model name on one Gateway is one service's (controller/claims.py says why).

A Gateway sends a name to the oldest HTTPRoute that matches it, so a name belongs to the
service whose route has routed it longest. Each service records in ``status.gatewayClaims``
the (Gateway, name) pairs its HTTPRoute routes, each with the route's creation time
(``routedSince``: the time the Gateway ranks it by), and the pair its spec asks for, without
one, until its route routes it. A route a Gateway has refused (its status says the parent
did not accept it: a listener that does not admit the service's namespace) claims nothing.

Before it builds or applies anything, a service whose spec asks for a name another service's
route already routes, from an older route (then by namespace/name, as the Gateway API breaks
ties), is stalled (``ModelNameInUse``), its own route deleted if it routes that name (two
services that applied in the same moment), and looked at again every ``RETRY_SECONDS`` until
the name is free. So a name is held only by serving it: a service stalled before its route
exists (a failed build, a pod that cannot be placed) holds none, and a spec renamed to a
taken name never reaches the route. A service's own claims are never weighed against it.
"""

from __future__ import annotations

from typing import Any

from ..api import ConditionType, LLMServiceSpec, Reason
from ..api.llmservice import MAX_GATEWAY_CLAIMS, GatewayClaim, LLMServiceStatus
from ..errors import SpecInvalid
from ..render import ServiceRef, served_model_name
from ..render.gateway import MODEL_HEADER, epp_name, route_name
from .snapshot import Actions, Cluster
from .status import set_condition

__all__ = ["claim_key", "claim_gateway", "routed_keys", "parent_conditions", "gateway_ready", "RETRY_SECONDS"]

# How often a service waiting for a model name looks again (another service's deletion does
# not reconcile it).
RETRY_SECONDS = 30.0


def claim_key(spec: LLMServiceSpec, ref: ServiceRef) -> tuple[str, str] | None:
    """(Gateway namespace/name, served model name), or None without ``spec.gateway``."""
    if spec.gateway is None:
        return None
    return f"{spec.gateway.namespace or ref.namespace}/{spec.gateway.name}", served_model_name(spec, ref.name)


def _refused(route: dict[str, Any], gateway: str) -> bool:
    """Whether the route's status says ``gateway`` did not accept it (Gateway API
    ``RouteParentStatus``: condition ``Accepted`` False, e.g. ``RouteReasonNotAllowedByListeners``,
    gateway-api #1155, which Contour's ``internal/gatewayapi`` sets for a namespace no listener
    admits; Contour also marks the lower-ranked of two routes with the same matches Accepted
    False, ``RuleMatchConflict``, changelogs/unreleased/6188: the older keeps the name here too)."""
    said = parent_conditions(route, gateway)
    return said is not None and (said.get("Accepted") or {}).get("status") == "False"


def parent_conditions(route: dict[str, Any], gateway: str) -> dict[str, dict[str, Any]] | None:
    """The conditions the route's status gives for ``gateway`` (``namespace/name``), by type;
    None when no Gateway controller has written any for it."""
    namespace = (route.get("metadata") or {}).get("namespace")
    for parent in (route.get("status") or {}).get("parents") or []:
        ref = parent.get("parentRef") or {}
        if f"{ref.get('namespace') or namespace}/{ref.get('name')}" == gateway:
            return {str(c.get("type")): c for c in parent.get("conditions") or [] if isinstance(c, dict)}
    return None


def routed_keys(route: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The (Gateway namespace/name, model name) pairs ``route``, the service's HTTPRoute as it
    is, sends to it: each parent that has not refused it, with each model header it matches."""
    if route is None:
        return []
    spec = route.get("spec") or {}
    namespace = (route.get("metadata") or {}).get("namespace")
    gateways = [f"{parent.get('namespace') or namespace}/{parent.get('name')}" for parent in spec.get("parentRefs") or []]
    models = [str(header.get("value")) for rule in spec.get("rules") or [] for match in rule.get("matches") or []
              for header in match.get("headers") or [] if header.get("name") == MODEL_HEADER]
    return list(dict.fromkeys((gateway, model) for gateway in gateways if not _refused(route, gateway)
                              for model in models))


def claim_gateway(status: LLMServiceStatus, spec: LLMServiceSpec, ref: ServiceRef, cluster: Cluster,
                  route: dict[str, Any] | None, actions: Actions) -> None:
    """Record the service's claims; stall it if another service's older route routes the name
    its spec asks for (``route``: its own live HTTPRoute, deleted then if it routes that name)."""
    key = claim_key(spec, ref)
    routed = routed_keys(route)
    since = str(((route or {}).get("metadata") or {}).get("creationTimestamp") or "") or None
    claims = [GatewayClaim(gateway=k[0], model=k[1], routed_since=since) for k in routed if since]
    if key is not None and key not in routed:
        claims.append(GatewayClaim(gateway=key[0], model=key[1]))
    status.gateway_claims = claims[:MAX_GATEWAY_CLAIMS] or None
    if key is None:
        return
    mine = (since, ref.namespace, ref.name) if key in routed and since else None
    older = [other for other in cluster.gateway_claims if mine is None or other < mine]
    if not older:
        return
    if route is not None and key in routed:  # applied in the same moment as an older route: the Gateway sends it there
        actions.delete.append(route)
    first, namespace, name = min(older)
    holder = f"LLMService {name}" if namespace == ref.namespace else "an LLMService in another namespace"
    raise SpecInvalid(
        f"spec.servedModelName: the model name {key[1]!r} is served on Gateway {key[0]} by {holder}, "
        f"whose route has routed it since {first}; requests for it go there. Serve another name "
        f"(spec.servedModelName), use another Gateway, or remove that service: this one takes the name "
        f"once it is free (looked at again every {RETRY_SECONDS:g} s)",
        reason=Reason.MODEL_NAME_IN_USE.value, retry_after=RETRY_SECONDS)


def gateway_ready(status: LLMServiceStatus, spec: LLMServiceSpec, ref: ServiceRef, cluster: Cluster,
                  now: str, generation: int | None) -> None:
    """``GatewayReady``, from the route's status for this service's Gateway (Gateway API
    ``RouteParentStatus``: ``Accepted``, and ``ResolvedRefs``, False with ``InvalidKind`` or
    ``BackendNotFound`` for a backend the controller cannot use, ``apis/v1/shared_types.go``
    ``RouteConditionResolvedRefs``) and its endpoint picker's Deployment, as the API server held
    them when the reconcile began; removed without ``spec.gateway``. It does not gate
    ``Ready``: the service's own Service answers in the cluster whatever the Gateway does. A
    route's status changes no child Kiln caches, so the condition follows it at the next
    resync."""
    key = claim_key(spec, ref)
    if key is None:
        status.conditions = [c for c in status.conditions if c.type != ConditionType.GATEWAY_READY.value]
        return
    gateway, model = key
    route, picker = route_name(ref.name), epp_name(ref.name)
    live_route = cluster.children.get(("HTTPRoute", route))
    said = (parent_conditions(live_route, gateway) if live_route else None) or {}
    picker_status = (cluster.children.get(("Deployment", picker)) or {}).get("status") or {}

    def state(type_: str) -> str | None:
        return (said.get(type_) or {}).get("status")

    def why(type_: str) -> str:
        text = " ".join(f"{said[type_].get('reason') or ''}: {said[type_].get('message') or ''}".split())
        return text if len(text) <= 200 else text[:197] + "..."

    value: bool | None
    if state("Accepted") == "False":
        value, reason = False, Reason.ROUTE_NOT_ACCEPTED
        message = f"Gateway {gateway} did not accept HTTPRoute {route} ({why('Accepted')})"
    elif state("ResolvedRefs") == "False":
        value, reason = False, Reason.ROUTE_REFS_UNRESOLVED
        message = (f"Gateway {gateway} cannot resolve HTTPRoute {route}'s InferencePool "
                   f"({why('ResolvedRefs')}): does its controller support InferencePool backends?")
    elif picker_status.get("observedGeneration") is not None and int(picker_status.get("availableReplicas") or 0) < 1:
        value, reason = False, Reason.PICKER_UNAVAILABLE
        message = (f"endpoint picker {picker} has no available replica, so requests for {model} "
                   f"through Gateway {gateway} fail: see kubectl describe deployment {picker} -n "
                   f"{ref.namespace}")
    elif state("Accepted") != "True":
        value, reason = None, Reason.ROUTE_PENDING
        message = (f"no Gateway controller has accepted HTTPRoute {route} for Gateway {gateway} yet "
                   "(is the Gateway's controller running?)")
    else:
        value, reason = True, Reason.GATEWAY_ROUTED
        message = f"Gateway {gateway} routes model {model} to this service's InferencePool"
    set_condition(status, ConditionType.GATEWAY_READY, value, reason.value, message, now, generation)
