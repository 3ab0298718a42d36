"""A verb the chart's RBAC lacks, on the real API server: a condition and an Event, then recovery.

The operator authenticates as the chart's ServiceAccount. With ``patch`` on Deployments taken
out of the chart's ClusterRole (server-side apply of a new object is authorized as ``patch``),
the build completes and the Deployment apply is a real 403: the service must say so in
``Stalled``/``Ready`` (reason ``Forbidden``, naming the resource) and in a ``ReconcileError``
Event, keep running with backoff instead of crashing, and become Ready once the verb is back.
"""

from __future__ import annotations

import copy

import pytest

from kiln.decide.conditions import get_condition, is_true

from ..support.cluster import chart_rbac
from .test_operator import MISTRAL, NS, _conditions, _ready, _service, _with_condition


def _without(role, group, resource, verb):
    role = copy.deepcopy(role)
    for rule in role["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    return role


async def test_a_verb_the_chart_lacks_is_a_condition_and_an_event_and_recovers_when_granted(
        make_sandbox, backend, control_plane):
    if backend != "real":
        pytest.skip("RBAC is enforced by the real API server (the emulator's RBAC test audits requests)")
    [role] = [o for o in chart_rbac() if o["kind"] == "ClusterRole"]
    control_plane.apply(_without(role, "apps", "deployments", "patch"))
    try:
        async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.5) as sb:
            sb.add_namespace(NS)
            await sb.start_operator()
            sb.start_kubelet()
            await sb.create(copy.deepcopy(MISTRAL))
            svc = await _with_condition(sb, "mistral-7b", "Stalled", "True")
            svc = await sb.wait_for(
                lambda: (s := _service(sb)) and get_condition(_conditions(s), "Stalled")["reason"] == "Forbidden" and s,
                timeout=60, what="Stalled=True, reason Forbidden")
            stalled = get_condition(_conditions(svc), "Stalled")
            assert "deployments" in stalled["message"] and "patch" in stalled["message"], stalled
            assert get_condition(_conditions(svc), "Ready")["status"] == "False"
            await sb.wait_for(lambda: any(e.get("reason") == "ReconcileError" and "forbidden" in e.get("message", "")
                                          for e in sb.objects("events")), what="the ReconcileError Event")
            assert sb.objects("deployments") == []
            assert sb.operator_error is None and sb._operator[0].is_alive(), "the operator keeps running"

            control_plane.apply(role)  # the verb is granted again
            await sb.wait_for(lambda: _ready(sb), timeout=60, what="Ready once the verb is granted")
            assert not is_true(_conditions(_service(sb)), "Stalled")
    finally:
        control_plane.apply(role)
