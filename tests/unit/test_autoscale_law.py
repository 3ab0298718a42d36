"""The control law, pinned."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from kiln.autoscale.law import LawParams, Recommendations, Sample, decide

# The prior burst headroom is off here, so that each test pins one term of the law; the
# prior's own tests turn it on.
PARAMS = LawParams(min_replicas=1, max_replicas=8, target=0.75, stabilization_seconds=300, prefill_target=0.5,
                   headroom_prior=0.0)


def _samples(now, replicas, fraction, waiting=0, span=60, period=15):
    return [Sample(t, f"r{i}", fraction(t, i) if callable(fraction) else fraction, waiting)
            for i in range(replicas) for t in range(int(now - span), int(now) + 1, period)]


def test_sustained_kv_pressure_scales_up():
    decision = decide(1000, _samples(1000, 2, 0.95), current=2, ready=2, starting=0,
                      params=PARAMS, recommendations=Recommendations())
    assert decision.desired == 3 and "scaling up" in decision.reason


def test_queue_scales_up_even_at_target():
    decision = decide(1000, _samples(1000, 2, 0.76, waiting=10), current=2, ready=2, starting=0,
                      params=PARAMS, recommendations=Recommendations())
    assert decision.desired >= 4 and "waiting" in decision.reason


def test_starting_replicas_count_as_capacity():
    # Two ready replicas at 95% need three; the third is already starting: no fourth.
    decision = decide(1000, _samples(1000, 2, 0.95), current=3, ready=2, starting=1,
                      params=PARAMS, recommendations=Recommendations())
    assert decision.desired == 3


def test_scrapes_of_a_smaller_fleet_are_not_applied_to_a_larger_one():
    # Two replicas ran at 128% of target until the third became ready; the fleet's demand
    # was 2.56 replicas, which three hold: no fourth (ready x 128% would ask for 3.84).
    before = [Sample(t, f"r{i}", 0.96) for i in range(2) for t in (955, 970, 985)]
    after = [Sample(1000, f"r{i}", 0.6) for i in range(3)]
    decision = decide(1000, before + after, current=3, ready=3, starting=0,
                      params=PARAMS, recommendations=Recommendations())
    assert decision.desired == 3, decision.reason


def test_no_scale_down_inside_the_stabilization_window():
    recs = Recommendations()
    assert decide(0, _samples(0, 4, 0.74), 4, 4, 0, PARAMS, recs).desired == 4
    for now in range(15, 300, 15):  # load drops; the earlier want of 4 is still in the window
        decision = decide(now, _samples(now, 4, 0.2), 4, 4, 0, PARAMS, recs)
        assert decision.desired == 4, now
    assert "stabilization" in decision.reason
    later = decide(320, _samples(320, 4, 0.2), 4, 4, 0, PARAMS, recs)
    assert later.desired == 3  # one replica per decision


def _first_scale_down(load, drop_at, end=1500):
    """Run the law every 15 s on 4 replicas whose KV fraction is ``load(t)`` until ``drop_at``
    and 0.2 after; the time of the first scale-down."""
    recs = Recommendations()
    for now in range(0, end, 15):
        decision = decide(now, _samples(now, 4, lambda t, i: load(t) if t < drop_at else 0.2),
                          4, 4, 0, PARAMS, recs)
        if decision.desired < 4:
            return now, decision.reason
    raise AssertionError("never scaled down")


def test_burst_headroom_is_learned_from_the_services_own_demand_growth():
    """A service whose demand triples within a cold start keeps a burst's worth of spare
    replicas; a smooth one runs at its target."""
    def run(load):
        recs, current = Recommendations(), 4
        for now in range(0, 3600, 15):
            decision = decide(now, _samples(now, current, load(now) * 4 / current), current,
                              current, 0, PARAMS, recs)
            current = decision.desired
        return recs.headroom(PARAMS.headroom_horizon, PARAMS.headroom_quantile)
    smooth = run(lambda t: 0.6 + 0.05 * math.sin(t / 600))
    bursty = run(lambda t: 0.9 if (t // 120) % 2 == 0 else 0.3)
    assert smooth < 0.2 and bursty >= 2.5  # bursts add 0.6 x 4 replicas / 0.75 target


def test_a_rise_counts_once_it_held_for_the_records_persistence_asks():
    """One reading's spike (a few long requests finishing in one scrape) is a rise of one
    record; a step the demand holds is a rise of every record after it. A persistence of
    three records counts the step and not the spikes."""
    recs = Recommendations()
    for i in range(240):  # an hour of records, 15 s apart
        spike = 2.0 if i % 20 == 10 else 0.0
        step = 2.0 if i >= 200 else 0.0
        recs.add_demand(15.0 * i, 3.0 + spike + step, 3600.0)
    assert recs.headroom(90.0, 0.95) == pytest.approx(2.0)  # 12 spikes and the step's first 6
    assert recs.headroom(90.0, 0.95, persistence=3) == pytest.approx(0.0)
    assert recs.headroom(90.0, 0.99, persistence=3) == pytest.approx(2.0)  # the step held: 6 of 240


def test_bursty_load_keeps_its_replicas_through_the_lulls():
    # Bursts every other two minutes: the load that falls comes back within a cold start,
    # so the burst headroom keeps the replicas it will need (the lull alone would ask for 2).
    with pytest.raises(AssertionError, match="never scaled down"):
        _first_scale_down(lambda t: 0.9 if (t // 120) % 2 else 0.1, drop_at=1500)


def test_missing_or_stale_metrics_hold():
    recs = Recommendations()
    nothing = decide(1000, [], 5, 5, 0, PARAMS, recs)
    assert nothing.desired == 5 and nothing.held and "holding" in nothing.reason
    stale = decide(1000, _samples(900, 5, 0.1), 5, 5, 0, PARAMS, recs)
    assert stale.desired == 5 and stale.held


def test_no_flapping_on_a_noisy_flat_load():
    rng = random.Random(7)
    recs = Recommendations()
    current = 3
    changes = 0
    history = []
    for now in range(0, 3600, 15):
        history += [Sample(now, f"r{i}", 0.62 + rng.uniform(-0.06, 0.06)) for i in range(current)]
        decision = decide(now, history, current, current, 0, PARAMS, recs)
        changes += decision.desired != current
        current = decision.desired
    assert changes == 0 and current == 3


def test_respects_min_and_max():
    full = decide(1000, _samples(1000, 8, 1.0, waiting=50), 8, 8, 0, PARAMS, Recommendations())
    assert full.desired == 8
    idle = LawParams(min_replicas=2, max_replicas=8, stabilization_seconds=0, headroom_prior=0.0)
    assert decide(1000, _samples(1000, 3, 0.0), 3, 3, 0, idle, Recommendations()).desired == 2
    assert decide(1000, [], 12, 12, 0, PARAMS, Recommendations()).desired == 8


def test_scale_up_is_bounded_per_decision():
    decision = decide(1000, _samples(1000, 1, 1.0, waiting=100), 1, 1, 0,
                      LawParams(max_replicas=64), Recommendations())
    assert decision.desired == 5  # at most max(4, current) more at once


def test_hpa_formula_table():
    from kiln.autoscale.hpa import hpa_replicas

    # (current, metric, target) -> desired: the examples of the HPA algorithm documentation
    cases = [((1, 200, 100), 2), ((4, 50, 100), 2), ((3, 105, 100), 3), ((3, 111, 100), 4),
             ((10, 91, 100), 10), ((10, 89, 100), 9), ((2, 0, 100), 0), ((0, 500, 100), 0),
             ((5, 1.5, 1.0), 8)]
    for (current, metric, target), desired in cases:
        assert hpa_replicas(current, metric, target) == desired, (current, metric, target)


def test_hpa_scale_down_waits_for_its_window():
    from kiln.autoscale.hpa import HPA

    hpa = HPA(min_replicas=1, max_replicas=10, target=1.0)
    assert hpa.step(0, 4, 1.0) == 4
    assert hpa.step(15, 4, 0.25) == 4       # the 4 of t=0 is inside the 300 s window
    assert hpa.step(301, 4, 0.25) == 1
    assert hpa.step(400, 1, None) == 1      # no metric: no change


def test_prefill_or_batch_saturation_scales_up_with_an_empty_kv_cache():
    # Long prompts, short answers: the KV cache is nearly empty while compute is not.
    prefill = [Sample(t, f"r{i}", 0.05, prefill_load=0.95) for i in range(2) for t in range(940, 1001, 15)]
    decision = decide(1000, prefill, current=2, ready=2, starting=0, params=PARAMS,
                      recommendations=Recommendations())
    # Each resource against its own target: prefill 95% of a 50% target is 1.9 replicas' worth.
    assert decision.desired == 4 and decision.reason.startswith("prefill load 95% against a 50% target")
    batch = [Sample(t, f"r{i}", 0.05, batch_fraction=1.0) for i in range(2) for t in range(940, 1001, 15)]
    decision = decide(1000, batch, current=2, ready=2, starting=0, params=PARAMS,
                      recommendations=Recommendations())
    assert decision.desired == 3 and decision.reason.startswith("batch load 100% against a 75% target")


def test_each_resource_is_held_at_its_own_target():
    """A batch 70% full is fine (target 75%: requests still start at once); a KV cache 95%
    full is not (target 75%: the next long sequences would queue); nor is a replica
    spending 80% of its time on prefill (target 50%: new requests wait behind prompts)."""
    def at(**load):
        samples = [Sample(t, f"r{i}", load.get("kv", 0.05), prefill_load=load.get("prefill"),
                          batch_fraction=load.get("batch")) for i in range(2) for t in range(940, 1001, 15)]
        return decide(1000, samples, current=2, ready=2, starting=0, params=PARAMS,
                      recommendations=Recommendations()).desired
    assert at(batch=0.70) == 2
    assert at(kv=0.95) == 3
    assert at(prefill=0.80) == 4


def test_a_burst_between_quiet_scrapes_counts():
    # One scrape in the window saw the fleet saturated; the mean would have hidden it.
    def fraction(t, i):
        return 0.95 if t == 970 else 0.1
    decision = decide(1000, _samples(1000, 4, fraction), current=4, ready=4, starting=0,
                      params=PARAMS, recommendations=Recommendations())
    assert decision.desired == 6


def test_a_queue_that_asks_for_more_replicas_leads_the_reason():
    # A burst of long prompts: the batch is nearly empty, but requests wait for prefill.
    samples = [Sample(t, "r0", 0.05, waiting=473, active=18, batch_fraction=0.07)
               for t in range(940, 1001, 15)]
    decision = decide(1000, samples, current=1, ready=1, starting=0, params=PARAMS,
                      recommendations=Recommendations())
    assert decision.desired > 1
    assert decision.reason.startswith("473 requests waiting (batch load 7% against a 75% target)")
    assert decision.reason.endswith(f"scaling up 1 -> {decision.desired}")


# Demand from arrivals: a request costs 0.02 replica-seconds at full batch (50 requests/s fill
# a replica), a replica is sized at 80 % of that, and the scale-down band is 10 %. The
# headroom is held on top of the demand at target (a burst load of 1), so that what each test
# reads is the headroom's own size; the burst load has its own tests.
def _cost(prompt: float, output: float) -> float:
    assert (prompt, output) == pytest.approx((1000, 200))  # the mean lengths of those finished
    return 0.02


ARRIVALS = LawParams(min_replicas=1, max_replicas=16, target=0.75, stabilization_seconds=300,
                     tolerance=0.1, request_seconds=_cost, utilization_target=0.8, headroom_prior=0.0,
                     burst_load=1.0, headroom_prior_spent="none")


def _finishing(now, rates, span=60, period=15, start=0.0):
    """Scrapes of replicas ``r0..`` that finish ``rates[i]`` requests/s (1000 prompt and 200
    generated tokens each), counters since ``start``; a tiny KV and batch load."""
    samples = []
    for t in range(int(now - span), int(now) + 1, period):
        for i, rate in enumerate(rates):
            done = rate * (t - start)
            samples.append(Sample(t, f"r{i}", 0.05, active=4, batch_fraction=0.02, finished=done,
                                  input_tokens=1000 * done, output_tokens=200 * done))
    return samples


@pytest.mark.parametrize(("rates", "current", "desired"), [
    # 90 requests/s x 0.02 s / 0.8 = 2.25 replicas: three hold it (2.25 / 3 = 75 % of them,
    # inside the band), two would not.
    ((30, 30, 30), 3, 3),
    # 100 requests/s on two replicas: 2.5 replicas' worth, one more.
    ((50, 50), 2, 3),
    # 40 requests/s on four: 1.0 replica's worth; a scale-down keeps 1.0 / 0.9 -> 2, one
    # replica per decision: 3.
    ((10, 10, 10, 10), 4, 3),
])
def test_demand_is_arrivals_times_the_cost_of_a_request(rates, current, desired):
    decision = decide(1000, _finishing(1000, rates), current, current, 0, ARRIVALS,
                      Recommendations([(0.0, 1)]))
    assert decision.desired == desired, decision.reason
    assert decision.reason.startswith("arrivals load"), decision.reason


def test_a_new_replicas_first_interval_is_not_a_dip():
    # r2 became ready since the last scrape: its counters have no interval yet, so the scrape
    # at 1000 is left out instead of counting two replicas' arrivals as the fleet's.
    samples = _finishing(1000, (40, 40)) + [Sample(1000, "r2", 0.02, finished=50.0,
                                                   input_tokens=5e4, output_tokens=1e4)]
    from kiln.autoscale.law import arrival_demand
    demand = arrival_demand(samples, ARRIVALS)
    assert 1000 not in demand and demand[985] == pytest.approx(80 * 0.02 / 0.8)


def _ramp(params):
    """Arrivals rising 30 requests/s per minute for ten minutes on two replicas: the last
    decision and the record."""
    recs, current = Recommendations([(0.0, 2)]), 2
    samples: list[Sample] = []
    for now in range(0, 601, 15):
        rate = 40 + 0.5 * now  # requests/s, all of the fleet
        per = rate / current
        for i in range(current):
            done = 40 * now + 0.25 * now * now  # the integral of the rate
            share = done / current
            samples.append(Sample(now, f"r{i}", 0.05, finished=share, input_tokens=1000 * share,
                                  output_tokens=200 * share, active=round(per)))
        samples = [s for s in samples if s.time >= now - 60]
        decision = decide(now, samples, current, current, 0, params, recs)
    return decision, recs


def test_a_ramp_teaches_headroom_for_the_next_cold_start():
    """Arrivals rising 30 requests/s per minute: the demand rises 0.75 x 1.5 = 1.125
    replicas within a 90 s cold start, and the law keeps that much above the demand while
    the ramp goes on, read over a cold start (``trend_known_rise`` "cold start")."""
    decision, recs = _ramp(replace(ARRIVALS, trend_known_rise="cold start"))
    headroom = recs.headroom(ARRIVALS.headroom_horizon, ARRIVALS.headroom_quantile)
    assert headroom == pytest.approx(0.5 * 90 * 0.02 / 0.8)
    # At 600 s the last interval finished 336 requests/s, 8.4 replicas' worth, plus 1.1 of
    # headroom: 10, of which at most max(4, current) more at once.
    assert decision.desired == 6 and "+1.1 burst headroom" in decision.reason, decision.reason


def test_a_known_rise_forecasts_nothing_so_a_steady_ramp_is_met_by_the_targets_slack():
    """The same ramp with ``trend_known_rise`` "none" (the benchmark's choice): its rise
    within the last cold start is one the record holds, so no trend is added, and the
    learned headroom stops at the peak on record, which the ramp's head is."""
    decision, _ = _ramp(ARRIVALS)
    assert ARRIVALS.trend_known_rise == "none"
    assert decision.desired == 6 and "headroom" not in decision.reason, decision.reason


def test_a_backlog_is_drained_in_two_lifetimes():
    # Two saturated replicas (200 running each) with 800 requests waiting over two scrapes:
    # a replica turns over its 200 once per lifetime, so two lifetimes need 800 / 200 / 2 = 2
    # more replicas: 4, above the 3 that the arrivals (2.5 replicas' worth) ask for.
    samples = [replace(s, waiting=400, active=200) for s in _finishing(1000, (50, 50))]
    decision = decide(1000, samples, 2, 2, 0, ARRIVALS, Recommendations([(0.0, 2)]))
    assert decision.desired == 4 and decision.reason.startswith("800 requests waiting"), decision.reason


def test_a_fleet_with_every_batch_full_doubles():
    # Three replicas, every batch full (the executor's queue beyond it unseen): the finished
    # requests read the fleet's capacity, not the arrivals, so the demand is unknown above it
    # and the law asks for twice the ready replicas.
    samples = [replace(s, waiting=256, active=256, batch_fraction=1.0) for s in _finishing(1000, (40, 40, 40))]
    decision = decide(1000, samples, 3, 3, 0, replace(ARRIVALS, max_replicas=16), Recommendations([(0.0, 3)]))
    assert decision.desired == 6, decision.reason
    # While the replicas it asked for start, it asks for no more: they are the doubling.
    decision = decide(1000, samples, 6, 3, 3, replace(ARRIVALS, max_replicas=16), Recommendations([(0.0, 6)]))
    assert decision.desired == 6, decision.reason


def test_scale_down_waits_for_the_window_then_steps_one_replica():
    recs = Recommendations([(0.0, 3)])
    assert decide(0, _finishing(0, (30, 30, 30), start=-100), 3, 3, 0, ARRIVALS, recs).desired == 3
    current, history = 3, []
    for now in range(15, 500, 15):  # arrivals fall to 20 requests/s: 0.5 replicas' worth
        decision = decide(now, _finishing(now, [20 / current] * current, start=-100), current, current,
                          0, ARRIVALS, recs)
        history.append((now, decision.desired))
        current = decision.desired
    first = next(t for t, n in history if n < 3)
    # The want of 3 at 0 holds while it is in the 300 s window; then one replica a decision.
    assert first == 315 and dict(history)[315] == 2 and dict(history)[330] == 1, history


def test_the_learned_headroom_keeps_a_burst_through_a_lull_and_none_at_the_peak():
    """Bursts from 1 to 3 replicas' worth every 5 minutes: in a lull (1.0) the law keeps the
    2.0 a burst adds within a cold start; at the peak (3.0) it keeps nothing above it."""
    def at(rate):
        recs = Recommendations([(0.0, 4)])
        recs.demand = [(float(t), 3.0 if (t // 300) % 2 else 1.0) for t in range(0, 3000, 15)]
        return decide(3000, _finishing(3000, [rate] * 4), 4, 4, 0, ARRIVALS, recs)
    lull, peak = at(10), at(30)  # 40 and 120 requests/s: 1.0 and 3.0 replicas' worth
    assert lull.desired == 4 and "+2.0 burst headroom" in lull.reason, lull.reason
    assert peak.desired == 4 and "headroom" not in peak.reason, peak.reason
    fresh = decide(3000, _finishing(3000, [10] * 4), 4, 4, 0, ARRIVALS, Recommendations([(0.0, 4)]))
    assert fresh.desired == 3  # no bursts on record: the lull's 1.0 keeps 2, one step at a time


def _counted(now, fleet_rates, replicas, period=15):
    """Scrapes of ``replicas`` replicas sharing the fleet's ``fleet_rates`` (requests/s over
    each of the intervals before ``now``, oldest first), 1000 prompt and 200 generated tokens
    each; a tiny KV and batch load."""
    times = [now - period * (len(fleet_rates) - k) for k in range(len(fleet_rates) + 1)]
    done, samples = 1000.0, []
    for k, t in enumerate(times):
        if k:
            done += fleet_rates[k - 1] * period / replicas
        samples += [Sample(t, f"r{i}", 0.05, active=4, batch_fraction=0.02, finished=done,
                           input_tokens=1000 * done, output_tokens=200 * done) for i in range(replicas)]
    return samples


NO_BAND = replace(ARRIVALS, tolerance=0.0)


def test_a_scale_up_only_the_trend_asks_for_is_given_back_once_ready():
    """Three replicas carry 2.4 replicas' worth (96 requests/s); one noisy minute reads a
    slope (88 -> 112 requests/s: the busiest scrape 2.8 replicas' worth, the trend +1.2 more
    within a cold start). The forecast starts a fourth replica; the load stays flat, and the
    fourth goes once it is ready, instead of being held for the whole 300 s window."""
    recs = Recommendations([(0.0, 3)])
    rising = decide(1000, _counted(1000, (88, 96, 104, 112), 3), 3, 3, 0, NO_BAND, recs)
    assert rising.desired == 4 and rising.reason.startswith("burst headroom"), rising.reason
    flat = (96, 96, 96, 96)
    # While it starts, nothing is removed.
    starting = decide(1015, _counted(1015, flat, 3), 4, 3, 1, NO_BAND, recs)
    assert starting.desired == 4 and "while 1 start" in starting.reason, starting.reason
    # Ready at 1105 (a 90 s cold start): the flat load asks for 3, and no want of the window
    # was above 3.
    ready = decide(1105, _counted(1105, flat, 4), 4, 4, 0, NO_BAND, recs)
    assert ready.desired == 3 and "scaling down" in ready.reason, ready.reason


def test_a_scale_up_the_trend_asks_for_can_be_held_for_the_window():
    """The same noisy minute with ``trend_recorded``: the window records what the trend
    asked for (4), so the fourth replica stays for the window once it is ready, as a ramp
    that pauses for a scrape would need it to."""
    params = replace(NO_BAND, trend_recorded=True)
    recs = Recommendations([(0.0, 3)])
    assert decide(1000, _counted(1000, (88, 96, 104, 112), 3), 3, 3, 0, params, recs).desired == 4
    ready = decide(1105, _counted(1105, (96, 96, 96, 96), 4), 4, 4, 0, params, recs)
    assert ready.desired == 4 and "stabilization" in ready.reason, ready.reason


def test_a_fleet_only_the_trend_holds_is_not_held_by_it_for_the_window():
    """Four replicas, 2.8 replicas' worth at the busiest scrape and the trend +1.2 more: the
    trend alone keeps the fourth. Once the load is flat (2.4), the window holds what the
    load asked for (3), so the fourth goes at once instead of after 300 s (on/off traffic
    read such a slope at every clump)."""
    recs = Recommendations([(0.0, 3)])
    held = decide(1000, _counted(1000, (88, 96, 104, 112), 4), 4, 4, 0, NO_BAND, recs)
    assert held.desired == 4 and "+1.2 burst headroom" in held.reason, held.reason
    flat = decide(1015, _counted(1015, (96, 96, 96, 96), 4), 4, 4, 0, NO_BAND, recs)
    assert flat.desired == 3 and "scaling down" in flat.reason, flat.reason


def test_a_scale_up_the_measured_demand_asks_for_is_held_for_the_window():
    # The same fleet where the busiest scrape itself reads 3.2 replicas' worth (128
    # requests/s): the load, not a forecast, asked for the fourth, and the window holds it.
    recs = Recommendations([(0.0, 3)])
    assert decide(1000, _counted(1000, (128, 128, 128, 128), 3), 3, 3, 0, NO_BAND, recs).desired == 4
    later = decide(1105, _counted(1105, (96, 96, 96, 96), 4), 4, 4, 0, NO_BAND, recs)
    assert later.desired == 4 and "stabilization" in later.reason, later.reason


@pytest.mark.parametrize(("tolerance", "desired"), [(0.0, 3), (0.1, 4)])
def test_the_scale_down_band_is_a_parameter(tolerance, desired):
    # 2.8 replicas' worth (112 requests/s) on four replicas, nothing in the window above 3:
    # without a band three carry it; the HPA's 10 % band keeps ceil(2.8 / 0.9) = 4.
    params = replace(ARRIVALS, tolerance=tolerance)
    decision = decide(1000, _counted(1000, (112, 112, 112, 112), 4), 4, 4, 0, params,
                      Recommendations([(0.0, 3)]))
    assert decision.desired == desired, decision.reason


PRIOR = replace(ARRIVALS, tolerance=0.0, headroom_prior=1.0)


def test_a_service_with_no_history_keeps_a_replica_for_a_burst_it_cannot_rule_out():
    # Two replicas finishing 60 requests/s: 1.5 replicas' worth. With no demand on record the
    # law cannot tell a bursty service from a smooth one, and keeps a whole replica spare.
    fresh = decide(1000, _finishing(1000, (30, 30)), 2, 2, 0, PRIOR, Recommendations([(0.0, 2)]))
    assert fresh.desired == 3 and fresh.reason.startswith("burst headroom +1.0"), fresh.reason
    assert decide(1000, _finishing(1000, (30, 30)), 2, 2, 0, replace(PRIOR, headroom_prior=0.0),
                  Recommendations([(0.0, 2)])).desired == 2


def test_a_rise_is_carried_past_the_target_for_one_cold_start_at_the_burst_load():
    # 1.5 replicas' worth and a replica spare: 2.5 replicas at target. Replicas that carry a
    # rise at up to 1.3x their target for the cold start hold it with two (2.5 / 1.3 = 1.9);
    # the demand itself stays at target.
    carried = replace(PRIOR, burst_load=1.3)
    held = decide(1000, _finishing(1000, (30, 30)), 2, 2, 0, carried, Recommendations([(0.0, 2)]))
    assert held.desired == 2, held.reason
    busy = decide(1000, _finishing(1000, (50, 50)), 2, 2, 0, carried, Recommendations([(0.0, 2)]))
    assert busy.desired == 3, busy.reason  # 2.5 replicas' worth at target: no fewer than 3
    assert decide(1000, _finishing(1000, (30, 30)), 2, 2, 0, PRIOR, Recommendations([(0.0, 2)])).desired == 3


def test_a_longer_cold_start_carries_a_smaller_share_of_a_rise():
    # 2.5 replicas at target, carried at 1.3: two replicas hold it when a cold start is the 90 s
    # the burst load was chosen at (or shorter: never more than chosen). A 180 s cold start
    # carries half as far past the targets (1.15: 2.17 -> 3), so that a rise carried for the
    # whole cold start asks no more of a replica than it was chosen to.
    carried = replace(PRIOR, burst_load=1.3)
    for cold_start, desired in ((None, 2), (60.0, 2), (90.0, 2), (180.0, 3)):
        decision = decide(1000, _finishing(1000, (30, 30)), 2, 2, 0, replace(carried, cold_start=cold_start),
                          Recommendations([(0.0, 2)]))
        assert decision.desired == desired, (cold_start, decision.reason)
    # Without the service's cold start the law reads its horizon as one.
    assert decide(1000, _finishing(1000, (30, 30)), 2, 2, 0, replace(carried, headroom_horizon=180.0),
                  Recommendations([(0.0, 2)])).desired == 3


def test_the_burst_load_scoped_to_the_arrivals_leaves_a_pressure_s_headroom_at_target():
    # The KV cache at 60 % on both replicas: 1.6 replicas' worth at its 75 % target, above
    # the arrivals' 1.5. Carried wherever, 2.6 / 1.3 fits in two; scoped to the arrivals, the
    # KV-bound fleet keeps its spare replica at target.
    full = [replace(s, kv_fraction=0.6) for s in _finishing(1000, (30, 30))]
    wherever = decide(1000, full, 2, 2, 0, replace(PRIOR, burst_load=1.3, burst_load_scope="all"),
                      Recommendations([(0.0, 2)]))
    assert wherever.desired == 2 and wherever.reason.startswith("KV load"), wherever.reason
    scoped = replace(PRIOR, burst_load=1.3, burst_load_scope="arrivals")
    assert decide(1000, full, 2, 2, 0, scoped, Recommendations([(0.0, 2)])).desired == 3
    # Where the arrivals are the demand, the scope changes nothing.
    assert decide(1000, _finishing(1000, (30, 30)), 2, 2, 0, scoped, Recommendations([(0.0, 2)])).desired == 2
    with pytest.raises(ValueError, match="burst_load_scope"):
        replace(PRIOR, burst_load_scope="arrival")


def test_two_hours_without_a_steep_rise_give_the_prior_replica_back():
    # The record keeps the memory's last hour; the prior shrinks with the whole history.
    recs = Recommendations([(0.0, 3)])
    recs.demand, recs.since = [(float(t), 1.5) for t in range(3600, 7200, 15)], 0.0
    assert recs.prior(3600.0, 1.0, PRIOR.headroom_prior_seconds) == pytest.approx(0.5)
    smooth = decide(7200, _finishing(7200, (20, 20, 20)), 3, 3, 0, PRIOR, recs)
    assert smooth.desired == 2 and "headroom" not in smooth.reason, smooth.reason


def test_the_prior_shrinks_over_its_own_duration_not_the_memory():
    # Half an hour on record: the prior of one replica is half gone over an hour, a quarter
    # over two (``headroom_prior_seconds``, twice the memory), and it is what the law adds.
    recs = Recommendations([(0.0, 3)])
    recs.demand, recs.since = [(float(t), 1.5) for t in range(0, 1800, 15)], 0.0
    assert PRIOR.headroom_prior_seconds == 2 * PRIOR.headroom_memory
    hour = decide(1800, _finishing(1800, (20, 20, 20)), 3, 3, 0, replace(PRIOR, headroom_prior_seconds=3600.0), recs)
    two_hours = decide(1800, _finishing(1800, (20, 20, 20)), 3, 3, 0, PRIOR, recs)
    assert "+0.5 burst headroom" in hour.reason, hour.reason
    assert "+0.8 burst headroom" in two_hours.reason, two_hours.reason


@pytest.mark.parametrize("statistic", ["median", "least"])
def test_a_step_is_not_a_ramp(statistic):
    """On/off traffic jumps from 40 to 112 requests/s within one scrape and stays there: the
    busiest scrape is 2.8 replicas' worth and no more is coming, so no trend is added (a
    least-squares slope through the step forecast +1.6 replicas within a cold start). A ramp
    through the same scrapes rises between each two, and its trend is added."""
    params = replace(NO_BAND, trend_statistic=statistic)
    step = decide(1000, _counted(1000, (40, 40, 112, 112), 4), 4, 4, 0, params, Recommendations([(0.0, 4)]))
    assert step.desired == 3 and "headroom" not in step.reason, step.reason
    ramp = decide(1000, _counted(1000, (88, 96, 104, 112), 4), 4, 4, 0, params, Recommendations([(0.0, 4)]))
    assert ramp.desired == 4 and "+1.2 burst headroom" in ramp.reason, ramp.reason


@pytest.mark.parametrize("statistic", ["median", "least"])
def test_the_trend_is_the_rise_kept_up_over_a_cold_start(statistic):
    """The requests finished trail a clump of on/off traffic, so its step from 40 to 112
    requests/s shows over two scrapes and is then flat. Within the 60 s window, two of the
    three slopes rise and their median forecast as much again within a cold start; over the
    cold start itself (90 s, six slopes), the rise was kept up for a third of it and
    forecasts nothing. A ramp rising across all six is still a trend. (How far back the
    trend reads is chosen on the benchmark's training traces, from these two.)"""
    params = replace(NO_BAND, trend_statistic=statistic, trend_seconds=90.0)
    clump = _counted(1000, (40, 40, 40, 40, 76, 112, 112), 4)
    step = decide(1000, clump, 4, 4, 0, params, Recommendations([(0.0, 4)]))
    assert step.desired == 3 and "headroom" not in step.reason, step.reason
    if statistic == "median":
        window = decide(1000, clump, 4, 4, 0, replace(params, trend_seconds=60.0), Recommendations([(0.0, 4)]))
        assert window.desired == 6 and "burst headroom +2.8" in window.reason, window.reason
    ramp = decide(1000, _counted(1000, (64, 72, 80, 88, 96, 104, 112), 4), 4, 4, 0, params,
                  Recommendations([(0.0, 4)]))
    assert ramp.desired == 4 and "+1.2 burst headroom" in ramp.reason, ramp.reason


# A known rise read over a cold start, within once the record's rises.
OVER_COLD_START = replace(NO_BAND, trend_record_margin=1.0, trend_known_rise="cold start")


def _clumps(size):
    """A record of on/off demand: 1.0 replica's worth, with clumps of ``size`` at 150-300 s,
    450-600 s and 750-900 s."""
    recs = Recommendations([(0.0, 4)])
    recs.demand = [(float(t), size if any(a <= t < a + 150 for a in (150, 450, 750)) else 1.0)
                   for t in range(0, 990, 15)]
    recs.since = 0.0
    return recs


def test_a_rise_the_service_has_made_before_is_read_over_a_cold_start():
    """The clump of on/off traffic the window reads as a trend (40 -> 112 requests/s over two
    scrapes: +2.8 replicas within a cold start, on top of the 2.8 it reached) is a rise this
    service made every five minutes before: 1.9 replicas within a cold start each time, up
    to 2.9. Its demand rose by 1.8 within the last cold start, no more than those, so the
    trend reads it over the cold start, where it was kept up for a third of the slopes and
    forecasts nothing: the learned headroom (to the peak) is what stays, 3 replicas, not 6.
    A rise beyond any before it (clumps of 1.5) is read over the window, and forecast."""
    clump = _counted(1000, (40, 40, 40, 40, 76, 112, 112), 4)
    known = decide(1000, clump, 4, 4, 0, OVER_COLD_START, _clumps(2.9))
    assert known.desired == 3, known.reason
    bigger = decide(1000, clump, 4, 4, 0, OVER_COLD_START, _clumps(1.5))
    assert bigger.desired == 6 and "burst headroom +2.8" in bigger.reason, bigger.reason
    every = decide(1000, clump, 4, 4, 0, replace(OVER_COLD_START, trend_beyond_record=False), _clumps(2.9))
    assert every.desired == 6, every.reason


def test_a_rise_within_a_margin_of_the_record_counts_as_known():
    """The same clump (a rise of 1.8 replicas within the last cold start) on a service whose
    clumps rose by 1.0 before: beyond the record, read over the window and forecast (6); with
    a margin of twice the record's rises (``trend_record_margin`` 2), a known rise, read over
    the cold start (3)."""
    clump = _counted(1000, (40, 40, 40, 40, 76, 112, 112), 4)
    beyond = decide(1000, clump, 4, 4, 0, OVER_COLD_START, _clumps(2.0))
    assert beyond.desired == 6 and "burst headroom +2.8" in beyond.reason, beyond.reason
    within = decide(1000, clump, 4, 4, 0, replace(OVER_COLD_START, trend_record_margin=2.0), _clumps(2.0))
    assert within.desired == 3, within.reason


def test_a_known_rise_can_be_given_no_trend():
    """A ramp of 1.2 replicas over the last cold start, on a service whose clumps rose by 1.9:
    a known rise. Read over the cold start it still rises at every scrape and is forecast (+1.2:
    4 replicas); with ``trend_known_rise`` "none" the learned headroom alone (up to the 2.9 on
    record) stays: 3."""
    ramp = _counted(1000, (64, 72, 80, 88, 96, 104, 112), 4)
    read = decide(1000, ramp, 4, 4, 0, OVER_COLD_START, _clumps(2.9))
    assert read.desired == 4 and "+1.2 burst headroom" in read.reason, read.reason
    none = decide(1000, ramp, 4, 4, 0, replace(OVER_COLD_START, trend_known_rise="none"), _clumps(2.9))
    assert none.desired == 3, none.reason


def test_the_prior_retires_once_the_record_shows_a_rise_of_its_size():
    """0.9 replicas' worth (36 requests/s) 1000 s into a service whose clumps rose by 1.0
    replica within a cold start. The prior of 2 replicas has shrunk to 1.4 with the
    history, more than the learned rise (1.0): 3 replicas. Retired once the record shows a
    rise of 1 replica (``headroom_prior_shown``), the learned rise alone stays: 2. A rise of
    2 is not yet shown, and the prior stays."""
    flat = _counted(1000, (36, 36, 36, 36), 3)
    prior = replace(NO_BAND, headroom_prior=2.0)
    assert decide(1000, flat, 3, 3, 0, prior, _clumps(2.0)).desired == 3
    shown = decide(1000, flat, 3, 3, 0, replace(prior, headroom_prior_shown=1.0), _clumps(2.0))
    assert shown.desired == 2 and "+1.0 burst headroom" in shown.reason, shown.reason
    assert decide(1000, flat, 3, 3, 0, replace(prior, headroom_prior_shown=2.0), _clumps(2.0)).desired == 3


def test_the_rise_on_record_can_spend_the_prior():
    """A service whose clumps rose by 1.0 replica within a cold start, 1000 s into its
    history: the prior of 2 replicas has shrunk to 1.72. At a clump's peak (2.0 replicas'
    worth, 80 requests/s) the learned rise adds nothing, and the whole prior asks for 4
    replicas; spent by the rise the service has shown (``headroom_prior_spent`` "rise"),
    0.72 of it stays: 3; in proportion ("share"), half of it (a rise of 1.0 of the 2.0 that
    retires it): 0.86, 3. In the lull (0.9 replicas' worth) the whole prior asks for 3; the
    learned rise holds its clump, 2, where the rise spends the prior."""
    prior = replace(NO_BAND, headroom_prior=2.0, headroom_prior_shown=2.0)
    peak, lull = _counted(1000, (80, 80, 80, 80), 4), _counted(1000, (36, 36, 36, 36), 3)
    assert decide(1000, peak, 4, 4, 0, prior, _clumps(2.0)).desired == 4
    assert decide(1000, lull, 3, 3, 0, prior, _clumps(2.0)).desired == 3
    for spent, headroom in (("rise", "+0.7"), ("share", "+0.9")):
        at_peak = decide(1000, peak, 4, 4, 0, replace(prior, headroom_prior_spent=spent), _clumps(2.0))
        assert at_peak.desired == 3 and f"{headroom} burst headroom" in at_peak.reason, (spent, at_peak.reason)
        in_lull = decide(1000, lull, 3, 3, 0, replace(prior, headroom_prior_spent=spent), _clumps(2.0))
        assert in_lull.desired == 2 and "+1.0 burst headroom" in in_lull.reason, (spent, in_lull.reason)


def test_a_service_sets_its_initial_burst_headroom():
    """``spec.autoscaling.initialBurstHeadroom`` is the prior, and the rise that retires it.
    Unset, the trained defaults (2 and 2). On a service's first decision (360 requests/s,
    8 replicas' worth at the arrivals' target, no record): 0 holds the demand alone, 8
    replicas; the default two more, carried at up to 1.15x the target for a cold start
    (10 / 1.15: 9); a large service's 6, 13. Once its record shows clumps that rose by 2
    replicas within a cold start (6 -> 8), the default retires and a prior of 6 stays."""
    from kiln.api.llmservice import AutoscalingSpec

    def params(**extra):
        scaling = AutoscalingSpec.model_validate({"mode": "builtin", "maxReplicas": 20, **extra})
        return replace(LawParams.for_service(scaling), request_seconds=lambda prompt, output: 0.02)

    assert (params().headroom_prior, params().headroom_prior_shown) == (2.0, 2.0)
    large = params(initialBurstHeadroom=6)
    assert (large.headroom_prior, large.headroom_prior_shown) == (6.0, 6.0)
    busy = _counted(1000, (360, 360, 360, 360), 8)

    def spare(reason):
        found = re.search(r"burst headroom \+([0-9.]+)|\+([0-9.]+) burst headroom", reason)
        return found and (found[1] or found[2])

    for extra, desired, held in (({"initialBurstHeadroom": 6}, 13, "6.0"), ({}, 9, "2.0")):
        decision = decide(1000, busy, 8, 8, 0, params(**extra), Recommendations([(0.0, 8)]))
        assert decision.desired == desired and spare(decision.reason) == held, decision.reason
    none = decide(1000, busy, 8, 8, 0, params(initialBurstHeadroom=0), Recommendations([(0.0, 8)]))
    assert none.desired == 8 and spare(none.reason) is None, none.reason
    # At the peak on record (clumps of 8 from 6), where the learned rise adds nothing: the
    # default retired holds no spare; a prior of 6 stays, shrunk with the record's 1000 s of
    # history to 6 x (1 - 1000/7200).
    shown = _clumps(3.0)
    shown.demand = [(t, 5.0 + d) for t, d in shown.demand]
    retired = decide(1000, busy, 8, 8, 0, params(), shown)
    assert retired.desired == 8 and spare(retired.reason) is None, retired.reason
    assert spare(decide(1000, busy, 8, 8, 0, large, shown).reason) == "5.2"


@pytest.mark.parametrize("field", ["trend_statistic", "trend_known_rise", "headroom_prior_spent"])
def test_a_misspelt_choice_of_the_law_is_refused(field):
    with pytest.raises(ValueError, match=field):
        replace(NO_BAND, **{field: "coldstart"})


def test_a_backlog_holds_what_it_asks_for_not_the_trends_forecast():
    """Four replicas, 12 requests waiting and the demand ramping to 3.4 replicas' worth (136
    requests/s) with a trend of +2.4 within a cold start: the fleet goes to 6. The backlog
    asks for 5 (drained in two lifetimes at 40 running per replica), the load for 4. Once the
    six are ready and the load is flat, the window holds the 5 the backlog and the load asked
    for, not the sixth only the forecast asked for."""
    recs = Recommendations([(0.0, 4)])
    samples = [replace(s, active=40) for s in
               _backlogged(1000, (40, 56, 72, 88, 104, 120, 136), (0, 0, 0, 0, 0, 0, 3, 3), 4)]
    rising = decide(1000, samples, 4, 4, 0, NO_BAND, recs)
    assert rising.desired == 6, rising.reason
    flat = decide(1105, _counted(1105, (136,) * 7, 6), 6, 6, 0, NO_BAND, recs)
    assert flat.desired == 5 and "scaling down" in flat.reason, flat.reason


def _backlogged(now, fleet_rates, waiting, replicas=2, period=15):
    """:func:`_counted` with ``waiting[k]`` requests waiting on each replica at the k-th scrape."""
    samples = _counted(now, fleet_rates, replicas, period)
    times = sorted({s.time for s in samples})
    return [replace(s, waiting=waiting[times.index(s.time)]) for s in samples]


def test_the_rise_that_makes_a_backlog_is_learned_and_its_drain_is_not():
    """A backlog growing from 0 to 30 per replica while two replicas finish what they can
    (120 requests/s, 3.0 replicas' worth): the arrivals were at least that, and the law
    records it, so the rise from 1.0 is learned. Once the backlog shrinks, the requests
    finished are the catch-up (160 requests/s), not the traffic, and nothing is recorded."""
    recs = Recommendations([(0.0, 2)])
    recs.demand, recs.since = [(float(t), 1.0) for t in range(0, 990, 15)], 0.0
    decide(1000, _backlogged(1000, (40, 40, 120, 120), (0, 0, 0, 10, 30)), 2, 2, 0, NO_BAND, recs)
    assert recs.demand[-1] == (1000, pytest.approx(3.0))
    assert recs.headroom(NO_BAND.headroom_horizon, 0.99) == pytest.approx(2.0)
    decide(1015, _backlogged(1015, (40, 120, 120, 160), (0, 0, 10, 30, 20)), 2, 2, 0, NO_BAND, recs)
    assert recs.demand[-1][0] == 1000  # the drain's scrape is not on record


def test_the_defaults_are_the_choice_of_the_benchmarks_training():
    """``LawParams``' free parameters are what ``benchmarks/autoscaling.py --train`` chose
    on the training traces (the figures of that run are in the same file)."""
    training = Path(__file__).resolve().parents[2] / "benchmarks" / "autoscaling-training.json"
    chosen = json.loads(training.read_text())["chosen"]
    assert {name: getattr(LawParams(), name) for name in chosen} == chosen


# The TTFT objective (10.): 99 % of first responses within 2 s, read from Triton's default
# buckets (100, 500, 2000, 5000 ms).
OBJECTIVE = replace(ARRIVALS, ttft_objective=2.0)


def _histogram(on_time: float, late: float) -> tuple[tuple[float, float], ...]:
    return ((0.1, 0.0), (0.5, on_time / 2), (2.0, on_time), (5.0, on_time + late), (math.inf, on_time + late))


def _answered(now, rates, late_share, period=15):
    """Replicas finishing ``rates`` requests/s, a ``late_share`` of whose first responses came
    after 2 s (counters since 0)."""
    return [replace(s, first_responses=_histogram((1 - late_share) * s.finished, late_share * s.finished))
            for s in _finishing(now, rates, period=period)]


def test_the_share_of_first_responses_over_the_objective_is_read_from_the_last_interval():
    from kiln.autoscale.law import late_responses
    samples = _answered(1000, (30, 30, 30), 0.05)
    responses, late = late_responses(samples, 2.0)
    assert responses == pytest.approx(90 * 15) and late == pytest.approx(0.05 * 90 * 15)
    # An objective between two bounds is read at the lower one: the responses between 500 ms
    # and 2 s count as late against 1.5 s.
    responses, late = late_responses(samples, 1.5)
    assert late == pytest.approx(responses * (1 - 0.95 / 2))
    # No bound within the objective, or no histogram: nothing is read.
    assert late_responses(samples, 0.05) is None
    assert late_responses(_finishing(1000, (30, 30, 30)), 2.0) is None
    # A restarted pod's interval (its counters went back) is skipped.
    restarted = [replace(s, first_responses=_histogram(0.0, 0.0)) if s.time == 1000 and s.replica == "r0" else s
                 for s in samples]
    assert late_responses(restarted, 2.0)[0] == pytest.approx(60 * 15)


def test_a_missed_objective_corrects_the_demand_upwards_and_a_met_one_lets_it_go():
    # 90 requests/s x 0.02 s / 0.8 = 2.25 replicas: three hold it, by the model. But 5 % of the
    # first responses come after 2 s: the model is optimistic, and each decision with the
    # objective missed raises the demand by a tenth.
    recs = Recommendations([(0.0, 3)])
    decisions = [decide(now, _answered(now, (30, 30, 30), 0.05), 3, 3, 0, OBJECTIVE, recs)
                 for now in (1000, 1015, 1030)]
    assert recs.correction == pytest.approx(1.1 ** 3)
    assert decisions[-1].desired == 3  # 2.25 x 1.33 = 2.99
    decision = decide(1045, _answered(1045, (30, 30, 30), 0.05), 3, 3, 0, OBJECTIVE, recs)
    assert recs.correction == pytest.approx(1.1 ** 4)  # 2.25 x 1.46 = 3.3 replicas: a fourth
    assert decision.desired == 4 and "x1.46: first responses over the 2s TTFT objective" in decision.reason
    # While replicas start, the misses are the ones they will end: no further correction.
    decide(1060, _answered(1060, (30, 30, 30), 0.05), 4, 3, 1, OBJECTIVE, recs)
    assert recs.correction == pytest.approx(1.1 ** 4)
    # Misses within the budget (1 %) hold it; none at all let it shrink with its half-life.
    decide(1075, _answered(1075, (30, 30, 30), 0.005), 4, 4, 0, OBJECTIVE, recs)
    assert recs.correction == pytest.approx(1.1 ** 4)
    decide(1075 + 1800, _answered(1075 + 1800, (30, 30, 30), 0.0), 4, 4, 0, OBJECTIVE, recs)
    assert recs.correction == pytest.approx(1 + (1.1 ** 4 - 1) / 2)


def test_the_correction_is_bounded_and_needs_enough_responses():
    recs = Recommendations([(0.0, 3)])
    for now in range(1000, 1000 + 15 * 20, 15):
        decide(now, _answered(now, (30, 30, 30), 0.5), 3, 3, 0, OBJECTIVE, recs)
    assert recs.correction == OBJECTIVE.correction_max == 2.0
    # Under 20 first responses in the interval say nothing: 0.3 requests/s x 15 s x 3 replicas.
    quiet = Recommendations([(0.0, 1)])
    decide(1000, _answered(1000, (0.3, 0.3, 0.3), 0.5), 3, 3, 0, OBJECTIVE, quiet)
    assert quiet.correction == 1.0


def test_without_an_objective_the_law_reads_no_latency():
    recs = Recommendations([(0.0, 3)])
    decision = decide(1000, _answered(1000, (30, 30, 30), 0.5), 3, 3, 0, ARRIVALS, recs)
    assert recs.correction == 1.0 and decision.desired == 3


def test_pods_that_do_not_export_the_token_counters_still_build_a_record():
    """With a performance model but pods that export no token-length histograms (a Triton
    without the backend's custom metrics), the demand is the pressures: they are what the
    record learns from, so the prior shrinks over its two hours as it does with the counters,
    instead of holding its spare replica for as long as the service runs."""
    recs = Recommendations([(0.0, 2)])
    params = replace(PRIOR, stabilization_seconds=60)
    for now in range(0, 2 * 3600 + 1, 15):  # two hours at 1.2 replicas' worth of KV
        decision = decide(now, _samples(now, 2, 0.45), 2, 2, 0, params, recs)
    assert recs.demand and recs.since == 0, "nothing recorded"
    assert decision.desired == 2 and "headroom" not in decision.reason, decision.reason
