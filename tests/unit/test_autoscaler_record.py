"""The law's record survives an operator restart through the service's status, and a record
that is not one the operator could have written is refused or ignored."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from kiln.api.llmservice import RECORD_MAX_CHARS, AutoscalerRecord, AutoscalingStatus
from kiln.autoscale.law import LawParams, Recommendations, Sample, decide
from kiln.autoscale.record import restore, snapshot
from kiln.decide.status import parse_status

WALL = 1_800_000_000.0  # the wall clock when the record is saved
PARAMS = LawParams(min_replicas=1, max_replicas=16, target=0.75, request_seconds=lambda p, o: 0.05,
                   utilization_target=0.9, headroom_prior=2.0)


def _finishing(now, rate, replicas=4, span=60, period=15):
    """``replicas`` pods finishing ``rate`` requests/s in all (counters since 0)."""
    return [Sample(t, f"r{i}", 0.05, active=4, batch_fraction=0.02, finished=rate * t / replicas,
                   input_tokens=1000 * rate * t / replicas, output_tokens=200 * rate * t / replicas)
            for i in range(replicas) for t in range(int(now - span), int(now) + 1, period)]


def _rate(t):
    """Bursty traffic: 30 requests/s, 60 for two minutes of every ten."""
    return 60.0 if t % 600 < 120 else 30.0


def _run(recs, start, end, current=4):
    decisions = []
    for now in range(start, end, 15):
        samples = [s for t0 in (now,) for s in _finishing(t0, _rate(now))]
        decisions.append(decide(now, samples, current, current, 0, PARAMS, recs).desired)
    return decisions


def test_a_restored_record_decides_as_the_one_that_never_stopped():
    # Forty minutes of bursty traffic on the law's clock (monotonic seconds since the
    # operator started: 5,000 to 7,400), saved; a new operator, whose clock reads 20 at that
    # moment, restores it and goes on deciding as the old one would have.
    kept = Recommendations([(5000.0, 4)])
    _run(kept, 5000, 7400)
    record = snapshot(kept, 7400.0, WALL)
    assert record is not None and record.saved_at == "2027-01-15T08:00:00Z"
    assert record.started_at == "2027-01-15T07:20:00Z"  # the first demand on record, 40 min before

    restored = restore(record, 20.0, WALL, PARAMS.headroom_memory)
    assert restored is not None
    shift = 7400.0 - 20.0  # the old clock's reading at the new one's 20
    assert [(round(t + shift), round(d, 2)) for t, d in restored.demand] == \
        [(round(t), round(d, 2)) for t, d in kept.demand]
    assert restored.prior(20.0, 2.0, 3600) == pytest.approx(kept.prior(7400.0, 2.0, 3600))
    restored.add(20.0, 4, PARAMS.stabilization_seconds)  # as the autoscaler seeds a restart
    # Forty minutes more, side by side. The stabilisation window is not part of the record: a
    # restarted operator holds the fleet it found for one window (a scale-down the old one
    # made in a lull waits), and from then on decides as the old one does.
    for step in range(15, 40 * 60, 15):
        now_old, now_new = 7400 + step, 20 + step
        old = decide(now_old, _finishing(now_old, _rate(now_old)), 4, 4, 0, PARAMS, kept)
        new = decide(now_new, [Sample(s.time - shift, s.replica, s.kv_fraction, active=s.active,
                                      batch_fraction=s.batch_fraction, finished=s.finished,
                                      input_tokens=s.input_tokens, output_tokens=s.output_tokens)
                               for s in _finishing(now_old, _rate(now_old))], 4, 4, 0, PARAMS, restored)
        if step <= PARAMS.stabilization_seconds:
            assert new.desired in (old.desired, 4), step
        else:
            assert (new.desired, new.reason) == (old.desired, old.reason), step


def test_the_time_no_operator_ran_is_not_history_for_the_prior():
    recs = Recommendations(demand=[(float(t), 1.0) for t in range(0, 1800, 15)], since=0.0)
    back = restore(snapshot(recs, 1800.0, WALL), 0.0, WALL + 600, 3600.0)
    assert back is not None
    assert back.prior(0.0, 2.0, 3600) == pytest.approx(recs.prior(1800.0, 2.0, 3600)) == pytest.approx(1.0)
    assert max(t for t, _ in back.demand) == pytest.approx(-600 - 15)


def test_a_fresh_service_would_have_decided_otherwise():
    # The point of keeping it: on smooth traffic (36 requests/s, 2 replicas' worth), an
    # empty record keeps the prior's spare replicas, where eighty minutes on record have
    # shrunk it to two thirds of a replica (it shrinks over two hours).
    assert PARAMS.headroom_prior_seconds == 7200.0
    kept = Recommendations([(5000.0, 4)])
    for now in range(5000, 9800, 15):
        decide(now, _finishing(now, 36.0), 4, 4, 0, PARAMS, kept)
    fresh = Recommendations([(0.0, 4)])
    samples = _finishing(9800, 36.0)
    with_record = decide(9800, samples, 4, 4, 0, PARAMS, kept)
    without = decide(9800, samples, 4, 4, 0, PARAMS, fresh)
    assert without.desired > with_record.desired, (with_record.reason, without.reason)


def test_the_correction_and_the_hour_are_kept_and_what_is_older_is_gone():
    recs = Recommendations(demand=[(float(t), 2.5) for t in range(0, 3600, 15)], since=0.0)
    recs.correction, recs.corrected_at = 1.21, 3000.0
    record = snapshot(recs, 3600.0, WALL)
    back = restore(record, 100.0, WALL + 600, 3600.0)  # ten minutes with no operator
    assert back is not None and back.correction == 1.21
    assert back.corrected_at == pytest.approx(100.0 - 600 - 600)
    assert min(t for t, _ in back.demand) >= 100.0 - 3600.0  # the hour before now, no more
    assert len(back.demand) == len([t for t in range(0, 3600, 15) if t >= 600])
    assert restore(record, 100.0, WALL + 3700, 3600.0) is None  # nothing left after an hour away


def test_nothing_is_written_before_anything_is_recorded():
    assert snapshot(Recommendations([(0.0, 1)]), 100.0, WALL) is None


def test_a_long_record_keeps_its_newest_demand_within_the_bound():
    # A shorter decision period (the chart's timings) records more: the newest entries that
    # fit are written, never a status the API server would refuse.
    recs = Recommendations(demand=[(t / 4, 12345.67) for t in range(4 * 3600)], since=0.0)
    record = snapshot(recs, 3600.0, WALL)
    assert record is not None and len(record.demand) <= RECORD_MAX_CHARS
    assert record.demand.endswith(" 0:12345.67")
    AutoscalerRecord.model_validate(record.wire())


@pytest.mark.parametrize("field,value", [
    ("demand", "10:1.5 " * 2000),                       # over the length bound
    ("demand", "10:1.5;rm -rf /"),                      # not the format
    ("demand", "10:nan"), ("demand", "-10:1"), ("demand", "10:1e308"),
    ("demand", "10:1.5  20:1"), ("demand", "1" * 7 + ":1"),
    ("correction", 0.5), ("correction", 1e9), ("correction", math.inf),
])
def test_a_record_the_operator_could_not_have_written_is_refused(field, value):
    wire = {"savedAt": "2027-01-15T08:00:00Z", "startedAt": "2027-01-15T07:00:00Z", field: value}
    with pytest.raises(ValidationError):
        AutoscalerRecord.model_validate(wire)
    # In a status, it costs the autoscaling block, never the parse of the rest.
    status = parse_status({"desiredReplicas": 3, "autoscaling": {
        "lastDecision": "x", "decisionTime": "2027-01-15T08:00:00Z", "record": wire}})
    assert status.autoscaling is None and status.desired_replicas == 3


@pytest.mark.parametrize("saved,started", [
    ("2027-01-15T09:00:00Z", "2027-01-15T07:00:00Z"),  # saved after the wall clock's now
    ("2027-01-15T08:00:00Z", "2027-01-15T08:30:00Z"),  # began after it was saved
    ("yesterday", "2027-01-15T07:00:00Z"),
])
def test_a_record_this_clock_cannot_place_is_ignored(saved, started):
    record = AutoscalerRecord(saved_at=saved, started_at=started, demand="15:2.5 0:2.5")
    assert restore(record, 100.0, WALL, 3600.0) is None


def test_the_record_rides_in_the_status_schema():
    status = AutoscalingStatus(last_decision="x", decision_time="2027-01-15T08:00:00Z",
                               record=snapshot(Recommendations(demand=[(0.0, 1.0)], since=0.0), 15.0, WALL))
    assert status.wire()["record"]["demand"] == "15:1"


def test_a_newer_operator_s_status_keeps_what_this_one_knows():
    """After a rollback with the newer CRD left installed: a key this operator does not know,
    nested in the autoscaler's record, is skipped, and the inventory, the engine and the
    generation the status covers are kept (before, one unknown key cost all but the
    conditions and desiredReplicas, at every read: a merge patch never removes it)."""
    record = {"savedAt": "2027-01-15T08:00:00Z", "startedAt": "2027-01-15T07:00:00Z", "demand": "15:1",
              "futureTerm": 0.5}
    status = parse_status({"desiredReplicas": 3, "observedGeneration": 7, "children": ["Deployment/a-server"],
                           "engine": {"name": "e", "key": "k" * 64, "storageUri": "pvc://llm/cache/" + "k" * 64,
                                      "futureField": "x"},
                           "somethingNew": {"a": 1},
                           "autoscaling": {"lastDecision": "x", "decisionTime": "2027-01-15T08:00:00Z",
                                           "record": record}})
    assert status.observed_generation == 7 and status.children == ["Deployment/a-server"]
    assert status.engine is not None and status.engine.name == "e"
    assert status.autoscaling is not None and status.autoscaling.record.demand == "15:1"
    assert status.desired_replicas == 3
