"""`kiln simulate`: trace loading, the replay, and the CLI's JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiln.errors import SpecInvalid
from kiln.sim import load_trace

from ..conftest import ROOT

FIELDS = {"gpuHours", "sloAttainment", "ttftP50Ms", "ttftP99Ms", "tpotP99Ms", "scaleEvents", "maxReplicas",
          "coldStarts"}


def _trace(tmp_path, rows):
    path = tmp_path / "trace.csv"
    path.write_text("timestamp_s,input_tokens,output_tokens\n" + "".join(f"{t},{i},{o}\n" for t, i, o in rows))
    return path


def test_plain_csv_and_scaling(tmp_path):
    path = _trace(tmp_path, [(10, 100, 20), (12, 200, 30)])
    requests = load_trace(path, rate_scale=2, time_scale=2)
    assert [r.arrival for r in requests][::2] == [0.0, 4.0] and len(requests) == 4


def test_bad_trace_is_named(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SpecInvalid, match="--trace: x.csv has columns"):
        load_trace(path)


def test_simulate_json_for_every_policy(tmp_path):
    # A burst that needs more than one replica, then quiet.
    rows = [(t * 0.02, 3000, 400) for t in range(15000)] + [(300 + t, 3000, 400) for t in range(300)]
    path = _trace(tmp_path, rows)
    result = subprocess.run([sys.executable, "-m", "kiln", "simulate", "-f", str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml"),
                             "--trace", str(path), "-o", "json", "--cold-start", "30", "--floor"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    policies = report["policies"]
    assert set(policies) == {"kiln", "hpa", "hpa-tuned", "kpa", "keda-http", "hpa-metrics", "keda-metrics",
                             "static", "oracle", "static-min", "clairvoyant"}
    for figures in policies.values():
        assert figures is None or FIELDS <= set(figures)
    assert policies["kiln"]["maxReplicas"] > 1
    # The oracle meets the SLO goal; static holds the oracle's peak for the whole trace.
    assert policies["oracle"]["sloAttainment"] >= 0.99
    assert policies["static"]["maxReplicas"] == policies["oracle"]["maxReplicas"]
    assert policies["static"]["gpuHours"] >= policies["oracle"]["gpuHours"]
    # The references: the cheapest fixed fleet, and the clairvoyant schedule below it and
    # below every policy that meets the goal.
    assert policies["static-min"]["sloAttainment"] >= 0.99 and policies["clairvoyant"]["sloAttainment"] >= 0.99
    assert policies["clairvoyant"]["gpuHours"] <= policies["static-min"]["gpuHours"]
    for name in ("kiln", "hpa", "hpa-tuned", "kpa", "keda-http", "hpa-metrics", "keda-metrics"):
        if policies[name] and policies[name]["sloAttainment"] >= 0.99:
            assert policies["clairvoyant"]["gpuHours"] <= policies[name]["gpuHours"], name
    # --floor: below clairvoyant (no schedule goes below it), and not nothing.
    assert 0 < report["floor"]["gpuHours"] <= policies["clairvoyant"]["gpuHours"]


def test_metrics_outage_flag_is_checked(tmp_path):
    path = _trace(tmp_path, [(0, 10, 10)])
    result = subprocess.run([sys.executable, "-m", "kiln", "simulate", "-f", str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml"),
                             "--trace", str(path), "--metrics-outage", "soon"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--metrics-outage" in result.stderr


def test_kpa_panics_on_a_burst_and_holds_while_panicking():
    from kiln.autoscale import Sample
    from kiln.sim.engine import FleetView
    from kiln.sim.policies import kpa_policy

    policy = kpa_policy(1, 10, target_concurrency=10)
    calm = FleetView(0, [Sample(0, "r0", 0.1, waiting=0, active=5)], 1, 1, 0)
    assert policy(calm) == 1
    burst = FleetView(15, [Sample(15, "r0", 0.9, waiting=30, active=10)], 1, 1, 0)
    assert policy(burst) == 4  # panic window: 40 in flight / 10 per replica
    after = FleetView(30, [Sample(30, "r0", 0.2, waiting=0, active=2)], 4, 1, 3)
    assert policy(after) == 4  # no scale-down while panicking


def _small_fleet(initial=1):
    from kiln.planner.perf import PerfModel
    from kiln.sim import Fleet

    perf = PerfModel(kv_tokens=100_000, max_batch=64, weight_bytes=9e9, kv_bytes_per_token=65536.0,
                     bandwidth=3.35e12, prefill_tokens_per_s=20_000.0)
    return Fleet(perf, gpus_per_replica=1, initial=initial, cold_start=90.0)


def test_lead_in_is_the_opening_of_the_trace_mirrored_before_it():
    from kiln.sim.traces import Request, lead_in

    # The rate doubles halfway: the lead-in carries the opening's rate, not the end's.
    requests = [Request(float(t), 100, 10) for t in range(0, 600, 10)]
    requests += [Request(600.0 + t / 2, 100, 10) for t in range(0, 1200, 10)]
    before = lead_in(requests, 300)
    assert [r.arrival for r in before] == [float(-t) for t in range(290, 0, -10)]
    assert lead_in(requests, 0) == []


def test_a_lead_in_shapes_the_fleet_but_is_not_counted():
    from dataclasses import replace

    from kiln.autoscale import LawParams
    from kiln.sim.engine import simulate
    from kiln.sim.policies import kiln_policy, static_policy
    from kiln.sim.traces import Request

    quiet = [Request(float(t), 500, 50) for t in range(0, 600, 5)]
    light = [Request(-600 + t * 0.25, 2000, 50) for t in range(2400)]   # 4 requests/s before
    busy = [Request(-600 + t / 30, 2000, 50) for t in range(18_000)]    # 30 requests/s before
    fleet = _small_fleet()
    # A fixed fleet costs the same with or without a lead-in: only the trace's time counts.
    alone = simulate(quiet, replace(fleet, initial=2), static_policy(2), 2.0)
    after = simulate(quiet, replace(fleet, initial=2), static_policy(2), 2.0, warmup=light)
    assert after.gpu_hours == pytest.approx(alone.gpu_hours, rel=0.01)
    assert after.slo_attainment == alone.slo_attainment == 1.0
    # The law enters the trace with the replicas the busy lead-in asked for and brings them
    # down only after its stabilisation window.
    params = LawParams(min_replicas=1, max_replicas=8, stabilization_seconds=300)
    warm = simulate(quiet, fleet, kiln_policy(params), 2.0, warmup=busy)
    cold = simulate(quiet, fleet, kiln_policy(params), 2.0)
    assert warm.timeline[0][1] > 1 and cold.timeline[0][1] == 1
    assert warm.gpu_hours > cold.gpu_hours


def test_the_oracle_without_foresight_holds_what_recent_windows_needed():
    from kiln.sim.engine import FleetView
    from kiln.sim.policies import present_policy

    policy = present_policy([1, 3, 1, 1, 2], hold=120, margin=0, low=1, high=8)

    def at(now):
        return policy(FleetView(now, [], 1, 1, 0))
    assert at(-150) == 3 and at(-30) == 3  # the lead-in replays the opening mirrored: window 1 at -240..-120
    assert at(60) == 1                  # 120 s back is the lead-in's mirrored window 0
    assert at(125) == 3                 # window 1 needs 3, the moment it opens
    assert at(300) == 3                 # window 2 needs 1, but window 1 was within 120 s
    assert at(370) == 1
    assert at(479) == 1 and at(481) == 2  # window 4's need is not seen before it opens
    assert present_policy([1, 3], 0, 2, 1, 4)(FleetView(130, [], 1, 1, 0)) == 4  # margin, capped


def test_keda_http_parks_at_zero_and_each_wake_is_a_cold_start():
    from kiln.sim.engine import simulate
    from kiln.sim.policies import keda_http_policy, static_policy
    from kiln.sim.traces import Request

    # Three bursts of a minute, an hour apart: longer quiet than the 300 s cooldown.
    bursts = [Request(start + t, 1000, 50) for start in (0.0, 3600.0, 7200.0) for t in range(0, 60, 2)]
    fleet = _small_fleet()
    parked = simulate(bursts, fleet, keda_http_policy(4, 48, cooldown_seconds=300), 2.0)
    always = simulate(bursts, fleet, static_policy(1), 2.0)
    # The first burst finds the warm replica; the next two find none and wake one each: what
    # arrives before it is ready (90 s of cold start, longer than a burst) waits for it.
    assert parked.cold_starts == 60 and always.cold_starts == 0
    assert [n for t, n, _, _ in parked.timeline if t in (1800.0, 5400.0)] == [0, 0]
    assert parked.ttft_p99_ms >= 80_000 > always.ttft_p99_ms
    assert parked.slo_attainment == pytest.approx(1 / 3, abs=0.02) and always.slo_attainment == 1.0
    # What it buys: the GPU is released between bursts.
    assert parked.gpu_hours < always.gpu_hours / 2
    assert parked.wire()["coldStarts"] == parked.cold_starts


def test_requests_over_the_engine_limits_are_refused_and_counted():
    from dataclasses import replace

    from kiln.sim.engine import simulate
    from kiln.sim.policies import static_policy
    from kiln.sim.traces import Request

    fleet = _small_fleet()
    fleet = replace(fleet, perf=replace(fleet.perf, max_input_len=4096, max_seq_len=8192))
    requests = [Request(float(t), 1000, 100) for t in range(60)]
    requests += [Request(30.5, 5000, 10), Request(31.5, 4000, 5000)]  # over maxInputLen, maxSeqLen
    result = simulate(sorted(requests, key=lambda r: r.arrival), fleet, static_policy(1), 2.0)
    assert result.rejected == 2 and result.wire()["rejected"] == 2
    assert result.slo_attainment == 1.0  # the 60 the engine takes are all served in time


def test_chunked_context_lets_decoding_continue_beside_a_long_prompt():
    from dataclasses import replace

    from kiln.sim.engine import _Replica
    from kiln.sim.traces import Request

    perf = replace(_small_fleet().perf, max_num_tokens=512, attention_s_per_position=1e-12)
    replica = _Replica(0, 0.0)
    replica.queue.extend([Request(0.0, 100, 1000), Request(0.0, 60_000, 10)])
    replica.admit(perf)
    ttfts: list[float] = []
    replica.advance(0.0, 0.25, perf, ttfts, [])   # the short prompt's context, then decode
    generated = replica.running[0].generated
    replica.advance(0.25, 0.25, perf, ttfts, [])  # the long prompt is chunked: decode goes on
    assert replica.running[0].generated > generated + 5
    assert replica.running[1].prefill_left > 0 and len(ttfts) == 1


def test_stock_references_show_beside_kiln_within_100_columns(tmp_path, capsys):
    from kiln.cli import main

    rows = [(t * 0.1, 2000, 200) for t in range(3000)] + [(300 + t * 0.04, 2000, 200) for t in range(3000)]
    path = _trace(tmp_path, rows)
    code = main(["simulate", "-f", str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml"), "--trace", str(path),
                 "--cold-start", "30", "--policy", "kiln", "--policy", "hpa-metrics", "--policy", "keda-metrics",
                 "--policy", "clairvoyant"])
    out = capsys.readouterr().out
    assert code == 0
    assert all(len(line) <= 100 for line in out.splitlines())
    table = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert {"kiln", "hpa-metrics", "keda-metrics", "clairvoyant"} <= set(table)
    # Each stock row names the sweep point it reports; clairvoyant how it was found.
    assert any(line.startswith("hpa-metrics: ") for line in out.splitlines())
    assert any(line.startswith("clairvoyant: ") for line in out.splitlines())


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")
                                           if "autoscaling:" in p.read_text()))
def test_every_autoscaling_example_meets_the_slo_on_the_shipped_trace(example):
    """Each example that enables autoscaling, as ``kiln simulate`` runs it by default (its own
    bounds and mode), keeps the first token within 2 s for 99 % of the requests of
    ``examples/traces``, and never runs more replicas than its ``maxReplicas``."""
    import yaml

    scaling = yaml.safe_load((ROOT / "examples" / example).read_text())["spec"]["autoscaling"]
    mode = scaling.get("mode", "builtin")
    policy = {"builtin": "kiln", "keda-http": "keda-http"}[mode]  # the simulator's policy for the mode
    result = subprocess.run([sys.executable, "-m", "kiln", "simulate", "-f", str(ROOT / "examples" / example),
                             "--trace", str(ROOT / "examples" / "traces" / "azure-code-36-52min.csv"),
                             "--policy", policy, "-o", "json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    simulated = json.loads(result.stdout)["policies"][policy]
    assert simulated["sloAttainment"] >= 0.99
    assert simulated["maxReplicas"] <= scaling["maxReplicas"]


def test_each_scrape_carries_the_replicas_first_response_histogram():
    """As Triton's nv_inference_first_response_histogram_ms: cumulative counts at its default
    bounds, every TTFT the replica served counted once."""
    import math

    from kiln.sim.engine import simulate
    from kiln.sim.traces import Request

    seen = []

    def policy(view):
        seen.extend(view.samples)
        return 1

    # 12 prompts of 2000 tokens a second for 100 s, on one replica that prefills 20000 a second:
    # a queue builds, and most first responses come after 2 s.
    requests = [Request(t / 12, 2000, 50) for t in range(1200)]
    result = simulate(requests, _small_fleet(), policy, 2.0)
    assert result.slo_attainment < 0.5
    last = max(seen, key=lambda s: s.time).first_responses
    assert [bound for bound, _ in last] == [0.1, 0.5, 2.0, 5.0, math.inf]
    counts = [count for _, count in last]
    assert counts == sorted(counts)
    # The last scrape has every first response; the share within 2 s is the run's attainment.
    assert counts[-1] == len(requests)
    assert counts[2] / counts[-1] == pytest.approx(result.slo_attainment)


def test_the_kv_used_a_scrape_reports_is_the_blocks_allocated_not_those_reserved():
    """The backend's ``used`` blocks are ``KvCacheStats.usedNumBlocks``: the blocks allocated
    now, the prompt's at admission and one more each time generation crosses a block
    (``KVCacheManager::addSequence`` / ``updateToken``). What guaranteed_no_evict reserves to
    finish the running requests (``getRemainingBlocksToCompletion``) is counted when it
    schedules, and exported by no series: a replica whose reservations fill its KV admits no
    more while its page reads less than full."""
    from dataclasses import replace

    from kiln.sim.engine import _Replica, _scrape
    from kiln.sim.traces import Request

    perf = replace(_small_fleet().perf, kv_tokens=10_000, max_num_tokens=8192)
    replica = _Replica(0, 0.0)
    replica.queue.extend([Request(0.0, 2000, 4000), Request(0.0, 2000, 4000)])
    replica.admit(perf)
    assert len(replica.running) == 1 and len(replica.queue) == 1  # 6000 reserved: the next waits
    replica.advance(0.0, 0.5, perf, [], [])  # the prompt
    replica.advance(0.5, 0.5, perf, [], [])  # some of the output
    running = replica.running[0]
    assert 1 < running.generated < 4000
    page = _scrape(replica, 1.0, perf, 15.0)
    assert page.kv_fraction == pytest.approx((2000 + running.generated) / 10_000, abs=1e-4)
    assert page.kv_fraction < 0.6


def test_a_plain_service_routes_at_random_and_the_endpoint_picker_to_the_least_loaded():
    """kube-proxy sends each new connection to one of the Service's ready endpoints with equal
    probability (``pkg/proxy/iptables/proxier.go``, ``writeServiceToEndpointRules``: a
    ``statistic --mode random --probability 1/(n-i)`` rule per endpoint), blind to its load;
    the Gateway's endpoint picker scores the pods' queues and KV. On the same traffic and
    fleet, random routing leaves some replicas queueing while others idle: more first
    tokens come late."""
    from dataclasses import replace

    from kiln.sim.engine import simulate
    from kiln.sim.policies import static_policy
    from kiln.sim.traces import Request

    import random

    # Poisson arrivals, one prompt in ten of 16k tokens, at about 70 % of four replicas.
    draw, t, requests = random.Random(1), 0.0, []
    while t < 300:
        t += draw.expovariate(15)
        requests.append(Request(t, 16_000 if draw.random() < 0.1 else 600, 200))
    fleet = _small_fleet(initial=4)
    picked = simulate(requests, fleet, static_policy(4), 2.0)
    spread = simulate(requests, replace(fleet, routing="random"), static_policy(4), 2.0)
    again = simulate(requests, replace(fleet, routing="random"), static_policy(4), 2.0)
    assert picked.slo_attainment >= 0.99 > spread.slo_attainment
    assert spread.ttft_p99_ms > 1.5 * picked.ttft_p99_ms
    assert spread.wire() == again.wire()  # seeded: a replay is reproducible


def test_a_rate_below_one_thins_the_trace_evenly(tmp_path):
    path = _trace(tmp_path, [(t, 100, 20) for t in range(10)])
    assert [r.arrival for r in load_trace(path, rate_scale=0.5)] == [1.0, 3.0, 5.0, 7.0, 9.0]
    assert len(load_trace(path, rate_scale=0.25)) == 2
    with pytest.raises(SpecInvalid, match="--rate-scale: 0.05 keeps none of the 10 requests of trace.csv"):
        load_trace(path, rate_scale=0.05)


@pytest.mark.parametrize("flag, value, said", [
    ("--rate-scale", "0", "must be more than 0"), ("--rate-scale", "-6", "must be more than 0"),
    ("--time-scale", "-1", "must be at least 0.001"), ("--max-replicas", "0", "must be at least 1"),
    ("--cold-start", "-5", "must be at least 0"), ("--lead-in", "-1", "must be at least 0"),
    ("--slo-ttft-ms", "nan", "must be more than 0"), ("--max-replicas", "two", "'two' is not an integer"),
    ("--rate-scale", "inf", "must be more than 0"), ("--cold-start", "inf", "must be at least 0"),
])
def test_a_flag_out_of_its_range_is_bad_input_naming_it(tmp_path, capsys, flag, value, said):
    from kiln.cli import main

    path = _trace(tmp_path, [(0, 100, 20)])
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "-f", str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml"), "--trace", str(path), flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: {said}" in capsys.readouterr().err


def test_requests_over_the_engine_limits_are_said_in_the_table_and_all_of_them_is_bad_input(tmp_path, capsys):
    from kiln.cli import main

    manifest = str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml")
    mixed = _trace(tmp_path, [(0, 100_000, 10), (1, 100, 10), (2, 200, 20)])
    assert main(["simulate", "-f", manifest, "--trace", str(mixed), "--policy", "kiln"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("1 of them over the engine's limits (maxInputLen 4096, maxSeqLen 8192): refused")
    only = _trace(tmp_path, [(0, 100_000, 10)])
    assert main(["simulate", "-f", manifest, "--trace", str(only), "--policy", "kiln"]) == 2
    said = capsys.readouterr()
    assert said.out == "" and said.err.startswith("error: --trace: all 1 of its requests are over the engine's")
