"""One served model name on one Gateway is one service's (kiln.decide.claim): the claims a
service records, and how a service that asks for a name another's route routes waits."""

from __future__ import annotations

import copy

import pytest
import yaml

from kiln.api import LLMServiceSpec, LLMServiceStatus
from kiln.decide.claim import claim_gateway
from kiln.decide.snapshot import Actions, Cluster
from kiln.errors import SpecInvalid
from kiln.render import ServiceRef
from kiln.render.gateway import gateway_objects

from ..conftest import ROOT

GATEWAY = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8-gateway.yaml").read_text())
REF = ServiceRef("llama-8b-gw", "llm", "uid-1")
KEY = ("gateway/inference-gateway", "llama-3.1-8b-instruct")
EARLIER, NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "2026-01-01T00:09:00Z"


def _spec(**changes):
    raw = copy.deepcopy(GATEWAY["spec"])
    raw.update(changes)
    return LLMServiceSpec.model_validate(raw)


def _route(created=NOW, **changes):
    """The service's HTTPRoute as the API server holds it, made at ``created``."""
    [route] = [obj for obj in gateway_objects(_spec(**changes), REF.name, REF.namespace, REF.uid)
               if obj["kind"] == "HTTPRoute"]
    route = copy.deepcopy(route)
    route["metadata"]["creationTimestamp"] = created
    return route


def _claim(status, spec, claims=(), route=None):
    actions = Actions(status=status)
    claim_gateway(status, spec, REF, Cluster(gateway_claims=tuple(claims)), route, actions)
    return actions


def _held(status):
    return [(c.gateway, c.model, c.routed_since) for c in status.gateway_claims or []]


def test_a_name_is_claimed_by_the_route_that_routes_it_since_the_route_was_made():
    status = LLMServiceStatus()
    _claim(status, _spec())
    assert _held(status) == [(*KEY, None)]  # asked for, not yet routed: it holds nothing
    _claim(status, _spec(), route=_route())
    assert _held(status) == [(*KEY, NOW)]
    _claim(status, _spec(gateway={"name": "inference-gateway"}), route=_route())
    assert _held(status) == [(*KEY, NOW), ("llm/inference-gateway", KEY[1], None)]
    _claim(status, _spec(gateway=None))
    assert status.gateway_claims is None


def test_a_name_the_route_still_routes_stays_claimed_until_the_route_changes():
    """A rename (or spec.gateway removed) reaches the route only when the service applies
    again: after a rebuild, never while it is stalled. Until then the Gateway sends the old
    name to it, and it stays claimed."""
    status = LLMServiceStatus()
    _claim(status, _spec(servedModelName="renamed"), route=_route())
    assert _held(status) == [(*KEY, NOW), (KEY[0], "renamed", None)]
    _claim(status, _spec(gateway=None), route=_route())
    assert _held(status) == [(*KEY, NOW)]
    _claim(status, _spec(servedModelName="renamed"), route=_route(servedModelName="renamed"))
    assert _held(status) == [(KEY[0], "renamed", NOW)]  # applied: the old name is free
    # Renamed to a taken name: stalled, the route (and its claim) stay as they are.
    status = LLMServiceStatus()
    with pytest.raises(SpecInvalid):
        _claim(status, _spec(servedModelName="taken"), claims=[(LATER, "b", "x")], route=_route())
    assert _held(status) == [(*KEY, NOW), (KEY[0], "taken", None)]


def test_a_name_another_route_routes_stalls_a_service_that_does_not_route_it_yet():
    with pytest.raises(SpecInvalid) as error:
        _claim(LLMServiceStatus(), _spec(), claims=[(LATER, "team-b", "other")])
    assert error.value.reason == "ModelNameInUse" and error.value.retry_after == 30
    assert ("by an LLMService in another namespace, whose route has routed it since 2026-01-01T00:09:00Z"
            in error.value.message) and "team-b" not in error.value.message
    with pytest.raises(SpecInvalid, match="by LLMService neighbour, whose route"):
        _claim(LLMServiceStatus(), _spec(), claims=[(EARLIER, "llm", "neighbour")])


def test_two_routes_of_one_name_the_younger_gives_way_as_the_gateway_ranks_them():
    """Two services that applied in the same moment: the older route (then by
    namespace/name) keeps the name, the other withdraws its route."""
    _claim(LLMServiceStatus(), _spec(), claims=[(LATER, "b", "x")], route=_route(NOW))  # this one is older
    route = _route(NOW)
    actions = Actions(status=LLMServiceStatus())
    with pytest.raises(SpecInvalid):
        claim_gateway(actions.status, _spec(), REF, Cluster(gateway_claims=((NOW, "aaa", "x"),)), route, actions)
    assert actions.delete == [route]
    _claim(LLMServiceStatus(), _spec(), claims=[(NOW, "zzz", "x")], route=_route(NOW))


def test_a_route_the_gateway_refused_claims_nothing():
    """A listener that does not admit the service's namespace (Gateway API
    NotAllowedByListeners): the route routes nothing there, and holds no name."""
    route = _route()
    route["status"] = {"parents": [{"parentRef": {"name": "inference-gateway", "namespace": "gateway"},
                                    "controllerName": "example.net/gateway",
                                    "conditions": [{"type": "Accepted", "status": "False",
                                                    "reason": "NotAllowedByListeners"}]}]}
    status = LLMServiceStatus()
    _claim(status, _spec(), route=route)
    assert _held(status) == [(*KEY, None)]


def test_a_route_the_spec_no_longer_asks_for_is_the_live_one_until_it_is_pruned():
    """spec.gateway removed while the service rebuilds: the route stays until the prune after
    the build, and the name it routes stays the service's meanwhile."""
    from kiln.decide.decide import children, live_route
    from kiln.decide.intent import intend, parse
    from kiln.decide.policy import Policy
    from kiln.planner import model_config

    route = _route()
    without = copy.deepcopy(GATEWAY["spec"])
    del without["gateway"]
    parsed = parse(REF, without, Policy())
    rendered = intend(REF, parsed, model_config(parsed.spec.model.source)[0], 1).rendered
    objects = children(rendered)
    assert not any(child["kind"] == "HTTPRoute" for child in objects)
    lives = [None] * len(objects)
    assert live_route(objects, lives, Cluster(leftovers={("HTTPRoute", route["metadata"]["name"]): route})) == route
    assert live_route(objects, lives, Cluster(leftovers={("HTTPRoute", "gone"): None})) is None


# GatewayReady: what the route's status and the picker's Deployment say.
def _ready_condition(route_status=None, picker_status=None, spec=None):
    from kiln.decide.claim import gateway_ready

    spec = spec or _spec()
    objects = gateway_objects(spec, REF.name, REF.namespace, REF.uid)
    children = {}
    for obj in objects:
        if obj["kind"] == "HTTPRoute":
            children[("HTTPRoute", obj["metadata"]["name"])] = {**copy.deepcopy(obj), **(
                {"status": route_status} if route_status is not None else {})}
        if obj["kind"] == "Deployment" and picker_status is not None:
            children[("Deployment", obj["metadata"]["name"])] = {**copy.deepcopy(obj), "status": picker_status}
    status = LLMServiceStatus()
    gateway_ready(status, spec, REF, Cluster(children=children), NOW, 3)
    [condition] = [c for c in status.conditions if c.type == "GatewayReady"] or [None]
    return condition


def _parents(**conditions):
    return {"parents": [{"parentRef": {"name": "inference-gateway", "namespace": "gateway"},
                         "controllerName": "example.com/gateway",
                         "conditions": [{"type": kind, "status": value, "reason": reason, "message": message}
                                        for kind, (value, reason, message) in conditions.items()]}]}


AVAILABLE = {"observedGeneration": 1, "replicas": 1, "availableReplicas": 1}


def test_a_route_the_gateway_routes_through_an_available_picker_is_ready():
    condition = _ready_condition(_parents(Accepted=("True", "Accepted", ""), ResolvedRefs=("True", "ResolvedRefs", "")),
                                 AVAILABLE)
    assert (condition.status, condition.reason) == ("True", "GatewayRouted")
    assert "gateway/inference-gateway routes model llama-3.1-8b-instruct" in condition.message


@pytest.mark.parametrize("route_status, picker_status, status, reason, says", [
    (None, AVAILABLE, "Unknown", "RoutePending", "no Gateway controller has accepted"),
    ({"parents": [{"parentRef": {"name": "another-gateway"}, "conditions": [
        {"type": "Accepted", "status": "True"}]}]}, AVAILABLE, "Unknown", "RoutePending", "accepted"),
    (_parents(Accepted=("False", "NotAllowedByListeners", "no listener admits namespace llm")), AVAILABLE,
     "False", "RouteNotAccepted", "NotAllowedByListeners: no listener admits namespace llm"),
    (_parents(Accepted=("True", "Accepted", ""), ResolvedRefs=("False", "InvalidKind", "InferencePool is unknown")),
     AVAILABLE, "False", "RouteRefsUnresolved", "InvalidKind: InferencePool is unknown"),
    (_parents(Accepted=("True", "Accepted", ""), ResolvedRefs=("True", "ResolvedRefs", "")),
     {"observedGeneration": 1, "replicas": 1, "unavailableReplicas": 1}, "False", "PickerUnavailable",
     "has no available replica"),
])
def test_a_gateway_that_does_not_route_says_why(route_status, picker_status, status, reason, says):
    condition = _ready_condition(route_status, picker_status)
    assert (condition.status, condition.reason) == (status, reason) and says in condition.message
    assert len(condition.message) <= 400


def test_a_gateways_message_is_bounded_and_without_a_gateway_there_is_no_condition():
    condition = _ready_condition(_parents(Accepted=("False", "X" * 5000, "y\n" * 5000)), AVAILABLE)
    assert condition.reason == "RouteNotAccepted" and len(condition.message) < 400 and "\n" not in condition.message
    without = copy.deepcopy(GATEWAY["spec"])
    del without["gateway"]
    from kiln.api import parse_service_spec
    assert _ready_condition(spec=parse_service_spec(without)) is None
