"""One served model name on one Gateway is one service's (kiln.decide.claim): the claim a
service records, and how a later claim of a name waits for it."""

from __future__ import annotations

import copy

import pytest
import yaml

from kiln.api import LLMServiceSpec, LLMServiceStatus
from kiln.api.llmservice import GatewayClaim
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


def _claim(status, spec, claims=(), route=None, now=NOW):
    actions = Actions(status=status)
    claim_gateway(status, spec, REF, now, Cluster(gateway_claims=tuple(claims)), route, actions)
    return actions


def test_a_claim_is_recorded_once_and_kept_while_the_gateway_and_the_name_stay():
    status = LLMServiceStatus()
    _claim(status, _spec())
    assert status.gateway_claim == GatewayClaim(gateway=KEY[0], model=KEY[1], since=NOW)
    _claim(status, _spec(), now=LATER)
    assert status.gateway_claim.since == NOW  # its place in line
    _claim(status, _spec(servedModelName="renamed"), now=LATER)
    assert (status.gateway_claim.model, status.gateway_claim.since) == ("renamed", LATER)
    _claim(status, _spec(gateway={"name": "inference-gateway"}), now=LATER)  # the service's namespace
    assert status.gateway_claim.gateway == "llm/inference-gateway"
    _claim(status, _spec(gateway=None))
    assert status.gateway_claim is None


def test_an_older_claim_holds_the_name_and_a_tie_goes_by_namespace_and_name():
    _claim(LLMServiceStatus(), _spec(), claims=[(LATER, "team-b", "other")])  # this one is older
    with pytest.raises(SpecInvalid) as error:
        _claim(LLMServiceStatus(), _spec(), claims=[(EARLIER, "team-b", "other")])
    assert error.value.reason == "ModelNameInUse" and error.value.retry_after == 30
    assert "by an LLMService in another namespace, which claimed it first (2026-01-01T00:00:00Z)" \
        in error.value.message and "team-b" not in error.value.message
    # The same second: "aaa" sorts before "llm", as the Gateway API breaks its own ties.
    with pytest.raises(SpecInvalid):
        _claim(LLMServiceStatus(), _spec(), claims=[(NOW, "aaa", "other")])
    _claim(LLMServiceStatus(), _spec(), claims=[(NOW, "zzz", "other")])
    with pytest.raises(SpecInvalid, match="by LLMService neighbour, which"):
        _claim(LLMServiceStatus(), _spec(), claims=[(EARLIER, "llm", "neighbour")])


def test_a_losing_claim_withdraws_a_route_for_the_name_and_keeps_one_for_another():
    [route] = [obj for obj in gateway_objects(_spec(), REF.name, REF.namespace, REF.uid) if obj["kind"] == "HTTPRoute"]
    with pytest.raises(SpecInvalid):
        actions = Actions(status=LLMServiceStatus())
        claim_gateway(actions.status, _spec(), REF, NOW, Cluster(gateway_claims=((EARLIER, "b", "x"),)), route,
                      actions)
    assert actions.delete == [route]
    [before] = [obj for obj in gateway_objects(_spec(servedModelName="before"), REF.name, REF.namespace, REF.uid)
                if obj["kind"] == "HTTPRoute"]
    with pytest.raises(SpecInvalid):
        actions = Actions(status=LLMServiceStatus())
        claim_gateway(actions.status, _spec(), REF, NOW, Cluster(gateway_claims=((EARLIER, "b", "x"),)), before,
                      actions)
    assert actions.delete == []
