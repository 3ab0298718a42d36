"""The benchmark's traffic generator: seeded, shaped as its family says, and the seeds that
choose the law's parameters are never the ones it is reported on."""

from __future__ import annotations

import json
import random
import sys

import pytest

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import traffic  # noqa: E402

LENGTHS = [(100, 10), (2000, 200), (30000, 50)]


def _per_minute(requests, duration):
    counts = [0] * int(duration // 60)
    for r in requests:
        counts[min(len(counts) - 1, int(r.arrival // 60))] += 1
    return counts


def test_same_seed_same_trace_and_train_and_test_seeds_are_disjoint():
    a = traffic.generate("bursts", 1, 1800, 5.0, LENGTHS)
    assert a == traffic.generate("bursts", 1, 1800, 5.0, LENGTHS)
    assert a != traffic.generate("bursts", 2, 1800, 5.0, LENGTHS)
    assert not {s for f in traffic.FAMILIES for s in traffic.train_seeds(f)} & set(traffic.TEST_SEEDS)
    assert len(traffic.FAMILIES) * len(traffic.TEST_SEEDS) >= 20


def test_each_family_has_its_shape():
    duration = 3600
    ramp = _per_minute(traffic.generate("fast-ramp", 3, duration, 10.0, LENGTHS), duration)
    assert sum(ramp[-10:]) / 10 > 2.5 * sum(ramp[:5]) / 5  # from 0.3x to 1x of the peak
    bursts = _per_minute(traffic.generate("bursts", 3, duration, 10.0, LENGTHS), duration)
    assert max(bursts) > 1.4 * sorted(bursts)[len(bursts) // 2]  # bursts over the base
    diurnal = _per_minute(traffic.generate("diurnal", 3, duration, 10.0, LENGTHS), duration)
    assert max(diurnal) < 1.3 * 600 and min(diurnal) > 0.3 * 600
    lengths = {(r.input_tokens, r.output_tokens) for r in traffic.generate("long-context", 3, 600, 5.0, LENGTHS)}
    assert lengths <= set(LENGTHS) and len(lengths) == 3
    # On/off: clumps at the peak, and idle minutes (a few requests) between active spells.
    on_off = traffic.generate("idle-gaps", 3, duration, 10.0, LENGTHS)
    seconds = [0] * duration
    for r in on_off:
        seconds[int(r.arrival)] += 1
    idle = [m for m in _per_minute(on_off, duration) if m < 0.05 * 600]
    assert len(idle) >= 5 and max(sum(seconds[t:t + 15]) for t in range(duration - 15)) > 0.8 * 150
    # Mixed clumps: the same on/off traffic, its clumps of many heights up to the peak (the
    # floors are at most 0.4 of it); the idle-gaps clumps are all at the peak.
    mixed = {traffic.shape("mixed-clumps", random.Random(3), duration)(t) for t in range(duration)}
    assert max(mixed) <= 1.0 and len({v for v in mixed if v > 0.4}) >= 5
    same = {traffic.shape("idle-gaps", random.Random(3), duration)(t) for t in range(duration)}
    assert {v for v in same if v > 0.4} == {1.0}


def test_the_benchmark_reports_on_test_seeds_and_public_traces_only(monkeypatch, tmp_path):
    import autoscaling

    calls = []
    monkeypatch.setattr(autoscaling, "_generated", lambda traces, fleet, family, seed, history=0.0: calls.append(seed) or [])
    monkeypatch.setattr(autoscaling, "load_trace", lambda path, rate_scale: [])
    for file, _ in autoscaling.PUBLIC:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text("")
    tests = autoscaling.test_traces(tmp_path, None, traffic.TEST_SEEDS)
    trained = {s for f in traffic.FAMILIES for s in traffic.train_seeds(f)}
    assert set(calls) == set(traffic.TEST_SEEDS) and not set(calls) & trained
    generated = [label for label, *_ in tests if "/" in label]
    assert len(generated) >= 20 and {label.split("/")[0] for label in generated} == set(traffic.FAMILIES)
    assert len(tests) - len(generated) == len(autoscaling.PUBLIC)  # every public trace, none tuned on
    # A cut-short run still has every family: the first seed of each comes first.
    assert [label.split("/")[0] for label, *_ in tests[:len(traffic.FAMILIES)]] == list(traffic.FAMILIES)


def test_kiln_and_the_trained_hpa_are_chosen_by_one_rule():
    """The training rule, for the law and the HPA alike: the most training traces meeting
    the SLO first, then the fewest GPU-hours; the HPA setting it chose is in the sweep."""
    import autoscaling
    from kiln.sim.stock import STOCK_SWEEP

    rows = [{"metrics": "a", "meetSloOn": 9, "gpuHours": 10.0},
            {"metrics": "b", "meetSloOn": 10, "gpuHours": 30.0},
            {"metrics": "c", "meetSloOn": 10, "gpuHours": 20.0}]
    assert autoscaling._choose(rows)["metrics"] == "c"
    # A law candidate the test run refused is passed over, however it trained.
    law = [{"params": {"headroom_prior_spent": "none"}, "meetSloOn": 10, "gpuHours": 30.0},
           {"params": dict(autoscaling.VETOED[0]), "meetSloOn": 10, "gpuHours": 20.0}]
    assert autoscaling._choose_law(law)["params"] == {"headroom_prior_spent": "none"}
    training = json.loads(autoscaling.TRAINING.read_text())
    # Trained on the traces the benchmark trains on now (every family, every training seed).
    assert training["traces"] == [f"{f}/{s}" for f in traffic.FAMILIES for s in traffic.train_seeds(f)]
    assert training["stockChosen"] in dict(STOCK_SWEEP)
    assert training["stockChosen"] == autoscaling._choose(training["stockCandidates"])["metrics"]
    # The candidates' choice, then the persistence's at it, then the trend's record and the
    # prior's duration at both, then the burst load at all three, then how the rise on record
    # spends the prior at all four, on both views.
    # A candidate a test run refused (``VETOED``) is not chosen, and its figures stay.
    assert training["chosen"] == {**autoscaling._choose_law(training["candidates"])["params"],
                                  **autoscaling._choose_law(training["persistenceCandidates"])["params"],
                                  **autoscaling._choose_law(training["holdCandidates"])["params"],
                                  **autoscaling._choose_law(training["burstCandidates"])["params"],
                                  **autoscaling._choose_law(training["spareCandidates"])["params"]}
    assert all(any(row["params"] == vetoed for row in training["spareCandidates"]) for vetoed in autoscaling.VETOED)
    assert [row["params"]["headroom_persistence"] for row in training["persistenceCandidates"]] == \
        list(autoscaling.PERSISTENCES)
    assert [row["params"] for row in training["holdCandidates"]] == list(autoscaling.HOLD_CANDIDATES)
    assert [row["params"] for row in training["burstCandidates"]] == list(autoscaling.BURST_CANDIDATES)
    assert [row["params"] for row in training["spareCandidates"]] == list(autoscaling.SPARE_CANDIDATES)


def test_a_training_stage_is_kept_unless_named_or_a_choice_before_it_changes(monkeypatch):
    """``--train law`` runs the law's candidates again; the persistence, hold and burst stages
    were run at the file's choice of them, so they are kept while it stands and run again at
    the new choice when it does not."""
    import autoscaling

    kept = json.loads(autoscaling.TRAINING.read_text())
    ran: list[tuple[str, dict]] = []

    def stage(outcome: dict):
        def run(traces, fleet, params, pool, candidates, name):
            ran.append((name, {k: getattr(params, k) for k in ("headroom_prior", "headroom_prior_shown")}))
            return [{"params": c, "meetSloOn": 1, "gpuHours": 1.0 if c == outcome.get(name, c) else 2.0}
                    for c in candidates]
        return run

    monkeypatch.setattr(autoscaling, "_generated", lambda *args, **kwargs: [])
    fleet, params = autoscaling._service()
    same = {"law": {k: kept["chosen"][k] for k in ("headroom_prior", "headroom_prior_shown")}}
    monkeypatch.setattr(autoscaling, "_train_both_views", stage(same))
    training = autoscaling._train(ROOT, fleet, params, None, ("law",), kept)
    assert [name for name, _ in ran] == ["law"]
    assert training["persistenceCandidates"] == kept["persistenceCandidates"]
    assert training["holdCandidates"] == kept["holdCandidates"]
    assert training["burstCandidates"] == kept["burstCandidates"]
    assert training["spareCandidates"] == kept["spareCandidates"]
    assert training["chosen"] == kept["chosen"] and training["stockChosen"] == kept["stockChosen"]

    ran.clear()
    other = {"law": next(c for c in autoscaling.CANDIDATES if c != same["law"])}
    monkeypatch.setattr(autoscaling, "_train_both_views", stage(other))
    training = autoscaling._train(ROOT, fleet, params, None, ("law",), kept)
    assert ran == [("law", same["law"]), ("persistence", other["law"]), ("hold", other["law"]),
                   ("burst", other["law"]), ("spare", other["law"])]
    assert {k: training["chosen"][k] for k in other["law"]} == other["law"]


def test_a_history_leaves_the_trace_as_it_was_and_carries_the_familys_traffic():
    """The second view replays the hour before a test trace: the trace itself must be the
    same request for request (its clairvoyant and static-min stand for both views), and the
    hour must be the family's traffic: bursts in a bursty hour, spells in an on/off one."""
    for family in traffic.FAMILIES:
        for history in (300.0, 3600.0):
            trace = traffic.generate(family, 5, 1800, 10.0, LENGTHS)
            both = traffic.generate(family, 5, 1800, 10.0, LENGTHS, history=history)
            assert [r for r in both if r.arrival >= 0] == trace, (family, history)
            before = [r for r in both if r.arrival < 0]
            assert before and all(-history < r.arrival < 0 for r in before)

    def hour_before(requests):
        return _per_minute([type(r)(r.arrival + 3600, r.input_tokens, r.output_tokens)
                            for r in requests if r.arrival < 0], 3600)
    hour = hour_before(traffic.generate("bursts", 5, 2700, 10.0, LENGTHS, history=3600))
    assert max(hour) > 1.4 * sorted(hour)[len(hour) // 4]  # at least one burst above the base
    idle = hour_before(traffic.generate("idle-gaps", 5, 2700, 10.0, LENGTHS, history=3600))
    assert min(idle) <= 0.05 * max(idle) and max(idle) > 0


def test_the_stored_results_summaries_are_their_rows_summarized():
    """``benchmarks/autoscaling-results.json``'s summaries (both views) are what the code
    computes from its rows now: a summary field added or changed is recomputed with
    ``--summarize`` rather than left to disagree with the rows it reads."""
    import autoscaling

    report = json.loads((autoscaling.ROOT / "benchmarks" / "autoscaling-results.json").read_text())
    assert autoscaling.summaries(report) == report
    # The strongest reactive alternative against the same bound, beside kiln's ratios.
    summary = report["summary"]
    assert summary["bestStockOverClairvoyantMedian"] <= summary["bestStockOverClairvoyantWorst"]
    assert set(summary["tracesWhereBestStockOverClairvoyantExceeds1.5"]) <= {
        r["trace"] for r in report["test"] if r["sloAttainable"]} - set(summary["noStockMeetsSloOn"])
    # With the fixed fleets beside the stock points: per trace no costlier than static-min.
    for view in (summary, report["afterAnHour"]["summary"]):
        assert view["bestHindsightOverClairvoyantMedian"] <= summary["staticMinOverClairvoyantMedian"]
        assert set(view["tracesWhereBestHindsightOverClairvoyantExceeds1.5"]) <= {
            r["trace"] for r in report["test"] if r["sloAttainable"]}


def test_the_parts_file_was_run_on_the_law_and_traces_of_the_results():
    """``benchmarks/autoscaling-parts.json`` takes parts out of the law the results file ran:
    its "as trained" runs are the results file's kiln runs, trace by trace and view by view,
    and its summaries are what the code computes from its rows against that file now."""
    import autoscaling

    results = json.loads((autoscaling.ROOT / "benchmarks" / "autoscaling-results.json").read_text())
    report = json.loads(autoscaling.PARTS_FILE.read_text())
    kiln = {(row["trace"], "first"): row["kiln"] for row in results["test"]}
    kiln.update({(row["trace"], "afterAnHour"): row["afterAnHour"]["kiln"] for row in results["test"]
                 if "afterAnHour" in row})
    trained = {(row["trace"], run["view"]): run for row in report["traces"] for run in row["runs"]
               if run["part"] == "as trained"}
    assert set(trained) == set(kiln)
    for key, run in trained.items():
        assert (run["sloAttainment"], run["gpuHours"]) == (kiln[key]["sloAttainment"], kiln[key]["gpuHours"]), key
    assert [row["part"] for row in report["summary"][::2]] == [name for name, _ in autoscaling.PARTS]
    assert autoscaling.parts(report["traces"], results) == report["summary"]


def test_a_moved_burst_is_the_trace_until_it_comes():
    """``burst_moved``: the bursts trace with one of its later bursts moved to ``at``, the
    same request for request before ``at`` (no causal policy can tell them apart there),
    busier just after it; only bursts that start after ``at`` move, and only to where the
    family starts one."""
    duration, at = 2700, 240.0
    trace = traffic.generate("bursts", 101, duration, 10.0, LENGTHS)
    moved = traffic.burst_moved(101, duration, 10.0, LENGTHS, at)
    assert moved
    for variant in moved:
        assert [r for r in variant if r.arrival < at] == [r for r in trace if r.arrival < at]
        assert variant != trace
        # Half a minute to three minutes after it, the burst's edge has risen.
        assert (sum(at + 30 <= r.arrival < at + 180 for r in variant)
                > 1.1 * sum(at + 30 <= r.arrival < at + 180 for r in trace))
    later = traffic.burst_moved(101, duration, 10.0, LENGTHS, duration - 900)
    assert len(later) < len(moved)
    with pytest.raises(ValueError, match="within the first 1800 s"):
        traffic.burst_moved(101, duration, 10.0, LENGTHS, duration - 600)


def test_the_floor_file_was_run_on_the_traces_of_the_results():
    """``benchmarks/autoscaling-floor.json`` covers every trace of the results file some fleet
    meets the SLO on, its ratios are what the code computes against that file now, and each
    floor is below clairvoyant (the floor bounds every schedule) and below the causal floor."""
    import autoscaling

    results = json.loads((autoscaling.ROOT / "benchmarks" / "autoscaling-results.json").read_text())
    report = json.loads(autoscaling.FLOOR_FILE.read_text())
    assert {r["trace"] for r in report["traces"]} == {r["trace"] for r in results["test"] if r["sloAttainable"]}
    raw = [{k: r[k] for k in ("trace", "floorGpuHours", "causalFloorGpuHours")} for r in report["traces"]]
    assert {k: v for k, v in report.items() if k in ("traces", "summary")} == autoscaling.floors(raw, results)
    for row in report["traces"]:
        assert row["floorGpuHours"] <= row["clairvoyantGpuHours"], row["trace"]
        assert row["causalFloorGpuHours"] is None or row["causalFloorGpuHours"] >= row["floorGpuHours"]
    assert {r["trace"] for r in report["traces"] if r["causalFloorGpuHours"]} == {
        f"{family}/{seed}" for family in traffic.SOONER_FAMILIES for seed in traffic.TEST_SEEDS}


def test_an_on_off_trace_rises_sooner_where_its_family_can():
    """``sooner`` on the on/off families: the next spell or clump after ``at`` comes at ``at``
    where the gap before it can be that short (a clump 15 s after the last, a spell 60 s after
    the last ended), the trace unchanged before it; every trace drawn as before otherwise."""
    duration = 2700
    for family in ("idle-gaps", "mixed-clumps"):
        trace = traffic.generate(family, 101, duration, 10.0, LENGTHS)
        heights = (0.3, 1.0) if family == "mixed-clumps" else None
        steps = traffic._spells(random.Random(f"{family}/101"), 0.0, duration, heights)
        first = steps[0][0]  # the first spell's start: it may come at any moment before it
        variants = traffic.sooner(family, 101, duration, 10.0, LENGTHS, first / 2)
        assert len(variants) == 1
        assert [r for r in variants[0] if r.arrival < first / 2] == [r for r in trace if r.arrival < first / 2]
        assert (sum(first / 2 <= r.arrival < first / 2 + 60 for r in variants[0])
                > 3 * sum(first / 2 <= r.arrival < first / 2 + 60 for r in trace))
        # An idle spell's first minute: no spell starts sooner than 60 s after the last ends.
        ends = [t for t, level in steps if level == traffic.IDLE_LEVEL]
        assert traffic.sooner(family, 101, duration, 10.0, LENGTHS, ends[0] + 30) == []
    with pytest.raises(ValueError, match="no variants of the diurnal family"):
        traffic.sooner("diurnal", 101, duration, 10.0, LENGTHS, 60.0)


def test_the_documented_result_tables_are_the_stored_results():
    """docs/benchmarks.md's result tables are rendered from ``autoscaling-results.json``, the
    training, the model-error and the parts files (``--markdown FILE --docs docs/benchmarks.md``),
    so a new run cannot leave them behind."""
    import autoscaling

    report = json.loads((autoscaling.ROOT / "benchmarks" / "autoscaling-results.json").read_text())
    doc = (autoscaling.ROOT / "docs" / "benchmarks.md").read_text()
    tables = autoscaling.documented(report, json.loads(autoscaling.TRAINING.read_text()),
                                    json.loads(autoscaling.MODEL_ERROR.read_text()),
                                    json.loads(autoscaling.PARTS_FILE.read_text()),
                                    json.loads(autoscaling.FLOOR_FILE.read_text()))
    assert set(tables) == {"training", "training-persistence", "training-hold", "training-burst", "training-spare",
                           "training-hpa", "test", "test-by-family", "after-an-hour",
                           "after-an-hour-by-family", "cold-start", "model-error", "parts", "floor"}
    assert autoscaling.with_tables(doc, tables) == doc
    assert all(f"<!-- results:{name} -->" in doc for name in tables)


def test_the_parts_run_refuses_a_results_file_without_the_test_traces(tmp_path):
    """``--parts`` reads clairvoyant and the best stock point from a results file: one that
    lacks a test trace (a ``--quick`` run's) is refused, naming the traces, before any run."""
    import autoscaling

    fleet, params = autoscaling._service()
    with pytest.raises(SystemExit, match=r"no row for .*bursts/102.*run the test first"):
        autoscaling._parts_run(tmp_path, fleet, params, None, {"test": [{"trace": "bursts/101"}]})


def test_a_diagnosis_runs_each_variant_on_training_traces_only(monkeypatch, tmp_path):
    """``--diagnose``: each variant's law and period reach kiln's runs in both views (the
    first from nothing, the second after the trace's hour of history); test seeds, unknown
    parameters and bad periods are refused by name before any run."""
    import autoscaling
    from types import SimpleNamespace

    from kiln.sim.traces import Request

    variants = autoscaling.diagnose_variants(
        '{"as trained": {}, "fast": {"law": {"headroom_prior": 0}, "period": 5}}')
    assert autoscaling.diagnose_traces("bursts:1-2, idle-gaps:3") == [("bursts", 1), ("bursts", 2), ("idle-gaps", 3)]
    for bad, message in (("bursts:101", "bursts/101 is not a training seed"), ("nope:1", "no family 'nope'"),
                         ("bursts:3-1", "seeds as first-last")):
        with pytest.raises(ValueError, match=message):
            autoscaling.diagnose_traces(bad)
    for bad, message in (('{"a": {"law": {"nope": 1}}}', r"a\.law: \['nope'\] is not a field"),
                         ('{"a": {"period": 0}}', r"a\.period: 0 is not a number of seconds"),
                         ('{"a": {"law": {"trend_statistic": "mean"}}}', r"a\.law: trend_statistic"),
                         ('{"a": {"when": 1}}', 'takes only "law" and "period"'), ("[]", "a JSON object"),
                         ("{x", "not JSON")):
        with pytest.raises(ValueError, match=message):
            autoscaling.diagnose_variants(bad)

    earlier = [Request(arrival=-60.0 + i, input_tokens=100, output_tokens=10) for i in range(30)]
    trace = [Request(arrival=float(i), input_tokens=100, output_tokens=10) for i in range(30)]
    # The trace after its hour of history: what _generated gives with history=HISTORY_S.
    monkeypatch.setattr(autoscaling, "_generated", lambda traces, fleet, family, seed, history: [*earlier, *trace])
    seen = []

    def run(requests, fleet, policy, source, before=None):
        seen.append((requests == trace, fleet.period, before))
        return SimpleNamespace(result=SimpleNamespace(gpu_hours=1.0 + fleet.period / 100,
                                                      slo_attainment=0.98 if before else 1.0))
    monkeypatch.setattr(autoscaling, "_run", run)
    laws = []
    monkeypatch.setattr(autoscaling, "kiln_policy", lambda law, perf: laws.append(law.headroom_prior))
    fleet, params = autoscaling._service()
    runs = autoscaling._diagnosis(("bursts", 1, tmp_path, fleet, params, variants))
    assert seen == [(True, 15.0, None), (True, 15.0, earlier), (True, 5.0, None), (True, 5.0, earlier)]
    assert laws == [params.headroom_prior] * 2 + [0.0] * 2
    summary = autoscaling.diagnoses(runs, variants)
    assert [(s["variant"], s["view"], s["gpuHours"], s["kilnMeetsSloOn"]) for s in summary] == [
        ("as trained", "first", 1.15, 1), ("as trained", "afterAnHour", 1.15, 0),
        ("fast", "first", 1.05, 1), ("fast", "afterAnHour", 1.05, 0)]
    assert summary[1]["kilnMissesSloOn"] == {"bursts/1": 0.98}
