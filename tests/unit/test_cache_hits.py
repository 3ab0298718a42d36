"""A cache hit is counted, and its Event posted, once per service and engine."""

from __future__ import annotations

from kiln.controller import reconcile
from kiln.controller.context import OperatorContext
from kiln.decide import Actions, EventReason
from kiln.decide.status import parse_status


def _reused(key: str) -> Actions:
    actions = Actions(status=parse_status({}))
    actions.engine = {"metadata": {"name": f"engine-{key}"}, "spec": {"key": key}}
    actions.events.append(("Normal", EventReason.ENGINE_REUSED, f"engine {key} was already built"))
    return actions


def test_a_reconcile_on_a_status_not_yet_written_back_counts_the_hit_once(monkeypatch):
    """The status patch that records the engine a service uses lands after the reconcile
    that found it built; a second reconcile on a body the watch has not yet brought up to
    date finds the same engine 'new' again (seen on the real API server: two hits for one
    service). The operator counts and posts it once per service and engine key."""
    posted = []
    monkeypatch.setattr(reconcile.kopf, "event", lambda body, **event: posted.append(event["reason"]))
    ctx = OperatorContext(api=None)  # type: ignore[arg-type]
    body = {"metadata": {"uid": "u-1", "namespace": "ns", "name": "svc"}}
    for _ in range(2):
        reconcile._post(body, ctx, _reused("k1"))
    assert posted == ["EngineReused"]
    assert ctx.telemetry.registry.get_sample_value("kiln_engine_cache_hits_total") == 1
    # Another service of the same engine, and this service on another engine, are hits.
    reconcile._post({"metadata": {"uid": "u-2"}}, ctx, _reused("k1"))
    reconcile._post(body, ctx, _reused("k2"))
    assert ctx.telemetry.registry.get_sample_value("kiln_engine_cache_hits_total") == 3


def test_a_deleted_service_leaves_no_cache_hit_record_behind(monkeypatch):
    monkeypatch.setattr(reconcile.kopf, "event", lambda body, **event: None)
    ctx = OperatorContext(api=None)  # type: ignore[arg-type]
    reconcile._post({"metadata": {"uid": "u-1"}}, ctx, _reused("k1"))
    ctx.telemetry.forget_service("ns", "svc", "u-1")
    assert not ctx.telemetry._hits
