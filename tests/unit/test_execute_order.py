"""The executor writes a reconcile's children concurrently where they are independent, and
in dependency order where they are not: the ServiceAccounts and Roles before the
RoleBindings and the workload whose pods run as them. A first deploy of any example is two
round trips, each within the calls one reconcile has in flight."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from kiln.api import parse_service_manifest
from kiln.controller.execute import execute, stages
from kiln.controller.kube import PARALLEL_CALLS, ApiException
from kiln.render import ServiceRef, render
from kiln.decide.snapshot import Actions
from kiln.decide.status import parse_status
from kiln.errors import SpecInvalid

from ..conftest import ROOT
from ..support.planning import planned

NS = "llm"


def _obj(api_version, kind, name):
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": NS}}


ACCOUNT = _obj("v1", "ServiceAccount", "big")
LAUNCHER = _obj("v1", "ServiceAccount", "big-launcher")
ROLE = _obj("rbac.authorization.k8s.io/v1", "Role", "big-launcher")
BINDING = _obj("rbac.authorization.k8s.io/v1", "RoleBinding", "big-launcher")
WORKLOAD = _obj("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "big-group")
SERVICE = _obj("v1", "Service", "big-server")
POLICY = _obj("networking.k8s.io/v1", "NetworkPolicy", "big-server")
SCALER = _obj("keda.sh/v1alpha1", "ScaledObject", "big")
CHILDREN = [ACCOUNT, LAUNCHER, ROLE, BINDING, WORKLOAD, SERVICE, POLICY, SCALER]


class TimedApi:
    """Records when each apply started and returned; each takes a few event-loop turns, as a
    round trip to an API server does. ``refuse``: what the writes of some names raise (the
    ServiceAccounts of those names are written)."""

    def __init__(self, refuse: dict[str, Exception] | None = None) -> None:
        self.refuse = refuse or {}
        self.clock = 0
        self.started: dict[str, int] = {}
        self.returned: dict[str, int] = {}

    async def apply(self, obj):
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        self.started[key] = self.clock
        self.clock += 1
        for _ in range(3):
            await asyncio.sleep(0)
        self.returned[key] = self.clock
        self.clock += 1
        if obj["metadata"]["name"] in self.refuse and obj["kind"] != "ServiceAccount":
            raise self.refuse[obj["metadata"]["name"]]
        return {**obj, "status": {}}


def _actions(children):
    return Actions(status=parse_status({}), apply=list(children), workload=WORKLOAD)


def _key(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


async def test_each_child_is_written_after_what_it_needs():
    api = TimedApi()
    await execute(_actions(CHILDREN), api, {}, "2026-01-01T00:00:00Z", 1)
    assert set(api.started) == {_key(child) for child in CHILDREN}
    after = [(ROLE, BINDING), (ACCOUNT, WORKLOAD), (LAUNCHER, WORKLOAD)]
    for first, then in after:
        assert api.returned[_key(first)] < api.started[_key(then)], f"{_key(then)} before {_key(first)}"


async def test_independent_children_are_in_flight_together():
    api = TimedApi()
    await execute(_actions(CHILDREN), api, {}, "2026-01-01T00:00:00Z", 1)
    # The accounts, the Role, the Service and the NetworkPolicy: all started before any returned.
    firsts = (ACCOUNT, LAUNCHER, ROLE, SERVICE, POLICY)
    assert max(api.started[_key(c)] for c in firsts) < min(api.returned[_key(c)] for c in firsts)
    # The RoleBinding, the workload and its scaler (which targets the LLMService) too.
    seconds = (BINDING, WORKLOAD, SCALER)
    assert max(api.started[_key(c)] for c in seconds) < min(api.returned[_key(c)] for c in seconds)


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_a_first_deploy_is_two_round_trips_of_calls_in_flight_together(example):
    manifest = yaml.safe_load((ROOT / "examples" / example).read_text())
    _, spec = parse_service_manifest(manifest)
    result, gpu = planned(spec)
    rendered = render(ServiceRef(manifest["metadata"]["name"], "llm", "uid-1"), spec, result, gpu)
    children = [child for child in rendered.objects() if child["kind"] not in ("LLMEngine", "Job")]
    assert [len(stage) <= PARALLEL_CALLS for stage in stages(children)] == [True, True]


FORBIDDEN = ApiException(status=403, reason='roles.rbac.authorization.k8s.io "big-launcher" is forbidden')
INVALID = SpecInvalid("the API server refused Role big-launcher: rules[0]: Invalid", reason="ApplyRefused")


@pytest.mark.parametrize("error, said", [(FORBIDDEN, "spec.gpus: a multi-node service needs a Role"),
                                         (INVALID, "the API server refused Role big-launcher")])
async def test_a_refusal_stalls_the_service_before_the_later_stages(error, said):
    api = TimedApi(refuse={"big-launcher": error})
    actions = await execute(_actions(CHILDREN), api, {}, "2026-01-01T00:00:00Z", 1)
    assert _key(WORKLOAD) not in api.started and _key(SCALER) not in api.started
    [stalled] = [c for c in actions.status.conditions if c.type == "Stalled"]
    assert stalled.status == "True" and stalled.message.startswith(said)


async def test_an_outage_is_raised_for_a_retry():
    api = TimedApi(refuse={"big-server": ApiException(status=503, reason="unavailable")})
    with pytest.raises(ApiException) as raised:
        await execute(_actions(CHILDREN), api, {}, "2026-01-01T00:00:00Z", 1)
    assert raised.value.status == 503
    assert _key(WORKLOAD) not in api.started and _key(SCALER) not in api.started
