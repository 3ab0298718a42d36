"""Break-test of the operator's reading of what tenants control: a serving pod's metrics page,
a Prometheus answer at the URL a service names, a build pod's last words, a Hub config.json.
Each attack was run against the code first; the ones that succeeded are fixed and kept here
as they now pass, the ones the code withstood are kept below under their own heading."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp.web
import pytest

from kiln.api import parse_service_spec
from kiln.autoscale import KVSample
from kiln.controller.autoscaler import BuiltinAutoscaler
from kiln.controller.metrics import PodMetrics
from kiln.controller.prometheus import MAX_PROMETHEUS_ANSWER_BYTES, PrometheusMetrics

from .test_hostile_metrics import KV, _page, _Pods, _serve


async def _scrape(port: int) -> list[KVSample]:
    source = PodMetrics(_Pods(port))  # type: ignore[arg-type]
    try:
        return await source.kv_samples("llm", "sel")
    finally:
        await source.close()


async def _query(port: int) -> list[KVSample]:
    source = PrometheusMetrics(f"http://127.0.0.1:{port}")
    try:
        return await source.kv_samples("llm", "app.kubernetes.io/instance=svc")
    finally:
        await source.close()


# --- findings -------------------------------------------------------------------------------

async def test_a_metrics_page_that_redirects_is_not_followed():
    """A tenant's serving pod answers the scrape with a redirect to another host (the API
    server, the cloud's metadata service, anything the operator's network reaches): the
    operator must not go there; the pod gives no sample."""
    hits = []

    async def elsewhere(request):
        hits.append(request.path)
        return aiohttp.web.Response(text=_page())

    async with await _serve(elsewhere) as other:
        async def redirect(request):
            raise aiohttp.web.HTTPFound(f"http://127.0.0.1:{other.port}/latest/meta-data/")

        async with await _serve(redirect) as pod:
            found = await _scrape(pod.port)
    assert hits == [] and found == []


async def test_a_prometheus_answer_nested_past_the_parser_s_depth_gives_no_samples():
    """Within the byte bound, an answer of 100,000 nested arrays: Python's json raises
    RecursionError (not a ValueError) past its depth, which must end as no samples (the law
    holds), not as an exception out of the autoscale timer."""
    depth = 100_000
    body = ('{"status":"success","data":{"result":' + "[" * depth + "]" * depth + "}}").encode()
    assert len(body) < MAX_PROMETHEUS_ANSWER_BYTES

    async def answer(request):
        return aiohttp.web.Response(body=body, content_type="application/json")

    async with await _serve(answer) as server:
        assert await _query(server.port) == []


class _BuildPods:
    """The pods of a failed build Job: one, whose container ended with ``message``. The build
    runs the tokenizer's remote code (``trust_remote_code``), which may write the container's
    termination-message file itself; a pod of the tenant's own carrying the Job's
    ``job-name`` label is listed too."""

    def __init__(self, message: str) -> None:
        self.message = message

    async def list(self, api_version, kind, namespace, label_selector=None, **_):
        return [{"metadata": {"name": "b-build-x", "creationTimestamp": "2026-01-01T00:00:00Z"},
                 "status": {"containerStatuses": [{"name": "build", "state": {"terminated": {
                     "exitCode": 1, "message": self.message}}}]}}]


async def test_a_build_s_termination_message_nested_past_the_parser_s_depth_is_read_as_text():
    """4,096 bytes (the kubelet's bound on the message) of ``[``: the summary's JSON parse
    raised RecursionError out of the gather, failing the whole reconcile with a traceback."""
    from kiln.controller.gather import _build_failure

    said = await _build_failure(_BuildPods("[" * 4096), "llm", "svc-build")  # type: ignore[arg-type]
    assert said.startswith(" (container build, exit code 1)")


HOSTILE_TEXT = "step failed\x1b[2J\x1b]0;owned\x07 \u202egnp.exe\x00\x7f\x9b31m"


@pytest.mark.parametrize("message", [HOSTILE_TEXT, json.dumps({"step": "convert\x1b[31m", "message": HOSTILE_TEXT})])
async def test_a_build_s_last_words_reach_a_status_as_printable_text(message):
    """What a failed build pod wrote to its termination-message file goes into the
    LLMEngine's and the service's Ready condition and a BuildFailed Event: no terminal escape,
    bidirectional override or other control character of it may."""
    from kiln.controller.gather import _build_failure

    said = await _build_failure(_BuildPods(message), "llm", "svc-build")  # type: ignore[arg-type]
    assert "gnp.exe" in said and said.isprintable(), repr(said)


def test_a_config_s_architecture_reaches_the_fits_reason_as_printable_text():
    """A Hub config.json is the tenant's: an architecture named with a terminal escape or a
    bidirectional override is quoted in the Fits condition's message."""
    from kiln.planner import model_config

    raw = {"architectures": ["Evil\x1b[2J\x1b]0;owned\x07\u202eMLL\x9b"], "num_hidden_layers": 2}
    config, why = model_config("hf://someone/model", raw)
    assert config is None and "not supported" in why and why.isprintable(), repr(why)


SCALING = parse_service_spec({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                              "autoscaling": {"mode": "builtin", "minReplicas": 1, "maxReplicas": 4}})


class _Workload:
    async def get(self, *_):
        return {"status": {"readyReplicas": 1}}


class _Churning:
    """A source whose answer names new pods at every scrape: a Prometheus the tenant runs
    (``spec.autoscaling.prometheusUrl``; ``prometheus.allowedUrls`` allows any by default), or
    a Deployment's pods replaced over weeks. Each carries an input-token counter."""

    def __init__(self, per_scrape: int) -> None:
        self.per_scrape, self.scrapes = per_scrape, 0

    async def kv_samples(self, namespace, selector, api=None):
        self.scrapes += 1
        return [KVSample(1000, 100, 32, max_requests=64, replica=f"pod-{self.scrapes}-{i}", input_tokens_total=1.0)
                for i in range(self.per_scrape)]


async def test_the_autoscaler_forgets_the_counters_of_pods_gone_from_its_window():
    """The previous input-token reading of each replica was kept for ever, by pod name: a
    source naming new pods each scrape grew it without bound (memory, per service)."""
    now = [0.0]
    source = _Churning(per_scrape=1000)
    scaler = BuiltinAutoscaler(_Workload(), source, clock=lambda: now[0])  # type: ignore[arg-type]
    for tick in range(40):  # ten minutes of 15 s ticks
        now[0] = 15.0 * tick
        await scaler.evaluate("llm", "svc", SCALING, 1, prefill_tokens_per_s=10_000)
    fleet = scaler._fleets["llm", "svc"]
    window = scaler.params(SCALING).history_seconds
    # What the window can still read, no more: the scrapes of its last history_seconds.
    assert len(fleet.input_tokens) <= (window / 15.0 + 1) * source.per_scrape, len(fleet.input_tokens)


def _many_pods(pods: int) -> bytes:
    """An answer naming ``pods`` pods, each with the figures a sample needs (any query)."""
    items = [{"metric": {"pod": f"p{i}", "kv_cache_block_type": kind, "request_type": kind, "le": "+Inf"},
              "value": [0, value]} for i in range(pods) for kind, value in (("max", "1000"), ("tokens_per", "32"))]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": items}}).encode()


async def test_a_prometheus_answer_naming_more_pods_than_a_service_can_have_gives_no_samples():
    """Within the byte bound, 16,384 made-up pods a query (a service has at most 1,000
    replicas: the CRD's maxReplicas): each became a sample the law then read at every tick
    for its window, seconds of the event loop every other service's reconcile waits on."""
    body = _many_pods(16_384)
    assert len(body) < MAX_PROMETHEUS_ANSWER_BYTES

    async def answer(request):
        return aiohttp.web.Response(body=body, content_type="application/json")

    async with await _serve(answer) as server:
        assert await _query(server.port) == []


async def test_a_prometheus_answer_of_a_thousand_pods_is_read():
    body = _many_pods(1000)

    async def answer(request):
        return aiohttp.web.Response(body=body, content_type="application/json")

    async with await _serve(answer) as server:
        assert len(await _query(server.port)) == 1000


@pytest.mark.parametrize("labels", [
    'x="' + '\\"' * (3 * 2**19) + '"',  # 3 MiB of escaped quotes in one label value
    ",".join(f'l{i}="v"' for i in range(300_000)),  # 300,000 labels on one line
], ids=["escaped quotes", "many labels"])
def test_a_metrics_line_the_exposition_parser_takes_quadratic_time_on_is_not_parsed(labels):
    """Within the page's byte bound, one line of a family Kiln reads: prometheus_client's
    text parser re-slices the line at each escaped quote and at each label, so 3 MiB took
    it ~50 s (~30 s for the labels), synchronously, on the event loop every reconcile and
    every other scrape runs on (the page is read again at every tick)."""
    from kiln.autoscale import parse_triton_metrics

    page = _page() + f'{KV}{{kv_cache_block_type="free",model="tensorrt_llm",{labels}}} 1\n'
    assert len(page) < 4 * 2**20
    started = time.monotonic()
    assert parse_triton_metrics(page) is None
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("body", [b'{"status":"success","data":[1,2]}', b'{"status":"success","data":"x"}',
                                  b'{"status":"success","data":{"result":5}}',
                                  b'{"status":"success","data":{"result":true}}'])
async def test_a_prometheus_answer_whose_data_is_not_an_object_gives_no_samples(body):
    """``status: success`` with ``data`` a list, or ``result`` a number: an AttributeError or a
    TypeError out of the query, out of the autoscale timer, a traceback in the operator's log
    at every tick instead of a held decision."""
    async def answer(request):
        return aiohttp.web.Response(body=body, content_type="application/json")

    async with await _serve(answer) as server:
        assert await _query(server.port) == []


@pytest.mark.parametrize("url", [
    "http://gateway.monitoring.svc/team-b/../prometheus",
    "http://gateway.monitoring.svc/team-b/%2e%2e/prometheus",
    "http://gateway.monitoring.svc/team-b%2F..%2Fprometheus",
    "http://gateway.monitoring.svc/prometheus/.",
], ids=["dot-segments", "escaped-dots", "escaped-slashes", "dot"])
def test_keda_is_given_the_prometheus_url_the_platform_allowed_as_written(url):
    """prometheus.allowedUrls is compared with the tenant's URL as yarl normalizes it (dot
    segments removed, escapes decoded), but the ScaledObject hands KEDA the text as written,
    and Go's HTTP client sends its path as it is: a proxy that routes on path prefixes
    without normalizing them (Envoy's default, ``normalize_path: false``) sends
    ``/team-b/../prometheus/api/v1/query`` to team-b's backend, which the list does not allow.
    The URL KEDA gets is one of the list's, or the service is refused naming the field."""
    from kiln.decide.policy import Policy
    from kiln.errors import SpecInvalid
    from kiln.render.scaling import scaled_object
    from yarl import URL

    allowed = "http://gateway.monitoring.svc/prometheus"
    policy = Policy(prometheus_urls=(allowed,))
    spec = parse_service_spec({"model": {"source": "hf://a/b"}, "autoscaling": {
        "mode": "keda", "maxReplicas": 2, "prometheusUrl": url}})
    try:
        policy.check_prometheus(url)
    except SpecInvalid as error:
        assert error.message.startswith("spec.autoscaling.prometheusUrl: ")
        return
    [trigger] = scaled_object(spec, "svc", "llm", None)["spec"]["triggers"]
    written = URL(trigger["metadata"]["serverAddress"], encoded=True)
    assert written.raw_path.rstrip("/") == URL(allowed, encoded=True).raw_path, written


_CONFIG = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 16, "hidden_size": 2048,
           "intermediate_size": 8192, "num_attention_heads": 16, "num_key_value_heads": 8, "vocab_size": 32000}
_MIXTRAL = {**_CONFIG, "architectures": ["MixtralForCausalLM"], "num_local_experts": 8, "num_experts_per_tok": 2}
_FRACTIONS = [({**_CONFIG, "num_attention_heads": 0.5}, "num_attention_heads"),
              ({**_CONFIG, "num_key_value_heads": 0.5}, "num_key_value_heads"),
              ({**_CONFIG, "head_dim": 0.5}, "head_dim"),
              ({**_CONFIG, "kv_channels": 0.1}, "kv_channels"),
              ({**_CONFIG, "num_hidden_layers": 0.5}, "num_hidden_layers"),
              ({**_CONFIG, "vocab_size": 0.5}, "vocab_size"),
              ({**_CONFIG, "hidden_size": 2048.5}, "hidden_size"),
              ({**_MIXTRAL, "num_experts_per_tok": 1.5}, "num_experts_per_tok"),
              ({**_CONFIG, "text_config": {"num_key_value_heads": 0.25}}, "num_key_value_heads")]


@pytest.mark.parametrize("raw, field", _FRACTIONS, ids=[f"{field}={raw.get('text_config', raw)[field]}"
                                                        for raw, field in _FRACTIONS])
def test_a_config_s_fractional_dimension_is_malformed_naming_it(raw, field):
    """A head count of 0.5 is a positive number under the bound: read as int(0.5) == 0, it
    was a ZeroDivisionError out of the planner (``hidden // heads``, the KV pool over 0 bytes a
    token), in the operator's reconcile at every retry and out of ``kiln plan`` as an
    internal error; a vocabulary of 0.5 planned as a vocabulary of none."""
    from kiln.planner import model_config

    with pytest.raises(ValueError) as refused:
        model_config("hf://someone/model", raw)
    said = str(refused.value)
    assert field in said and "whole number" in said and len(said) < 200, said


@pytest.mark.parametrize("raw, field", _FRACTIONS[:2], ids=["heads", "kv-heads"])
async def test_the_operator_says_a_fractional_head_count_is_malformed_naming_it(raw, field, tmp_path, monkeypatch):
    from kiln.controller.models import REASON_CHARS, ModelResolver
    from tests.support.fake_hub import Repo, fake_hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    with fake_hub({"someone/model": Repo({"config.json": json.dumps(raw).encode()})}) as hub:
        resolved, why = await ModelResolver(endpoint=hub.url).resolve(spec, None)
    assert resolved is None and field in why and len(why) <= REASON_CHARS, why


def test_kiln_plan_says_a_fractional_head_count_is_malformed_naming_it(tmp_path, capsys):
    from kiln.cli import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps({**_CONFIG, "num_attention_heads": 0.5}))
    service = tmp_path / "svc.yaml"
    service.write_text(json.dumps({"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                                   "metadata": {"name": "svc"}, "spec": {"model": {"source": "s3://bucket/m"}}}))
    code = main(["plan", "-f", str(service), "--model-config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --model-config: ") and "num_attention_heads" in err, err


def _integers(value):
    if isinstance(value, dict):
        return [n for item in value.values() for n in _integers(item)]
    if isinstance(value, list):
        return [n for item in value for n in _integers(item)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


_VAST = {**_CONFIG, "num_hidden_layers": 2**20, "hidden_size": 2**20, "intermediate_size": 2**22,
         "vocab_size": 2**20}


@pytest.mark.parametrize("raw", [_VAST, {**_MIXTRAL, "num_local_experts": 2**24, "intermediate_size": 2**24,
                                         "hidden_size": 2**16, "num_hidden_layers": 2**10},
                                 {**_CONFIG, "num_hidden_layers": 2**10, "hidden_size": 2**16, "intermediate_size": 2**20}],
                         ids=["dense", "experts", "under-the-bound"])
def test_a_config_s_sizes_never_make_a_plan_the_api_server_cannot_store(raw):
    """Each size under its own bound, together a model of 2**64 bytes and more: status.plan's
    weightBytesPerGpu past int64, which the API server decodes as a float and refuses for a
    field of type integer (go-openapi ``swag.IsFloat64AJSONInteger``: 2**53 at most), so the
    status write fails at every reconcile and the Fits reason is never seen. Refused with the
    fields that make it, or planned within int64."""
    from kiln.errors import PlanRefused
    from kiln.planner import lookup_gpu, model_config, plan

    try:
        config, why = model_config("hf://someone/model", raw)
    except ValueError as refused:
        said = str(refused)
        assert "num_hidden_layers" in said and len(said) < 300, said
        return
    assert config is not None, why
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    try:
        written = plan(config, spec, lookup_gpu(spec.gpu.type)).status().wire()
    except PlanRefused:
        return
    assert all(-2**63 <= n < 2**63 for n in _integers(written)), written


async def test_an_architecture_that_is_not_a_name_is_refused_naming_the_field(tmp_path, monkeypatch):
    """``architectures: [[[...]]]`` nested to just under the JSON parser's depth: read in the
    resolver's thread, then quoted with ``str()`` on the event loop, whose stack is deeper; a
    RecursionError, reported as "maximum recursion depth exceeded", naming nothing."""
    from kiln.controller.models import REASON_CHARS, ModelResolver
    from tests.support.fake_hub import Repo, fake_hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    body = ('{"architectures": [' + "[" * 985 + "]" * 985 + '], "num_hidden_layers": 2}').encode()
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    with fake_hub({"someone/model": Repo({"config.json": body})}) as hub:
        resolved, why = await ModelResolver(endpoint=hub.url).resolve(spec, None)
    assert resolved is None and "architectures" in why and len(why) <= REASON_CHARS, why


# --- attacks the code withstood ---------------------------------------------------------------

def _dripping(chunks, headers=None):
    """A handler that sends ``chunks`` one every half second (until the client hangs up)."""
    async def drip(request):
        response = aiohttp.web.StreamResponse(headers=headers)
        await response.prepare(request)
        try:
            for chunk in chunks:
                await response.write(chunk)
                await asyncio.sleep(0.5)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        return response
    return drip


async def test_withstood_a_page_dripped_a_byte_at_a_time_ends_at_the_scrape_timeout():
    async with await _serve(_dripping([ch.encode() for ch in _page()])) as server:
        started = time.monotonic()
        assert await _scrape(server.port) == []
    assert time.monotonic() - started < 10.0  # SCRAPE_TIMEOUT_SECONDS is 3; a loaded machine is slower


async def test_withstood_an_endless_chunked_page_is_cut_at_the_bound():
    sent = [0]

    async def endless(request):
        response = aiohttp.web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while True:
                await response.write(b"# " + b"x" * 65_000 + b"\n")
                sent[0] += 65_003
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        return response

    async with await _serve(endless) as server:
        assert await _scrape(server.port) == []
    assert sent[0] < 64 * 2**20


async def test_withstood_a_page_declaring_a_gigabyte_is_not_read():
    async def huge(request):
        response = aiohttp.web.StreamResponse(headers={"Content-Length": str(2**30)})
        await response.prepare(request)
        await response.write(_page().encode())
        return response

    async with await _serve(huge) as server:
        assert await _scrape(server.port) == []


async def test_withstood_a_prometheus_redirect_is_not_followed():
    hits = []

    async def elsewhere(request):
        hits.append(request.path)
        return aiohttp.web.Response(text="{}")

    async with await _serve(elsewhere) as other:
        async def redirect(request):
            raise aiohttp.web.HTTPTemporaryRedirect(f"http://127.0.0.1:{other.port}/computeMetadata/v1/")

        async with await _serve(redirect) as server:
            assert await _query(server.port) == []
    assert hits == []


async def test_withstood_a_prometheus_answer_dripped_ends_at_the_timeout():
    async with await _serve(_dripping([b" "] * 100, {"Content-Type": "application/json"})) as server:
        started = time.monotonic()
        assert await _query(server.port) == []
    assert time.monotonic() - started < 10.0  # the same 3 s timeout


@pytest.mark.parametrize("value", ["NaN", "+Inf", "-Inf", "-1", "1e308", "9007199254740993", "1e400", "0x10", "", None])
async def test_withstood_a_prometheus_figure_that_is_not_a_count_gives_no_sample(value):
    items = [{"metric": {"pod": "p", "kv_cache_block_type": "max"}, "value": [0, value]},
             {"metric": {"pod": "p", "kv_cache_block_type": "tokens_per"}, "value": [0, "32"]}]
    body = json.dumps({"status": "success", "data": {"result": items}}).encode()

    async def answer(request):
        return aiohttp.web.Response(body=body, content_type="application/json")

    async with await _serve(answer) as server:
        assert await _query(server.port) == []


@pytest.mark.parametrize("body", [b"[]", b'"success"',
                                  b'{"status":"success","data":{"result":{"a":1}}}',
                                  b'{"status":"success","data":{"result":[1,"x",null,[],{"metric":[],"value":5}]}}'])
async def test_withstood_a_prometheus_answer_of_the_wrong_shape_gives_no_sample(body):
    async def answer(request):
        return aiohttp.web.Response(body=body, content_type="application/json")

    async with await _serve(answer) as server:
        assert await _query(server.port) == []


@pytest.mark.parametrize("waiting", ["NaN", "+Inf", "-3", "1e308"])
def test_withstood_a_queue_gauge_that_is_not_a_count_gives_no_sample(waiting):
    from kiln.autoscale import parse_triton_metrics

    page = _page() + f'nv_trt_llm_request_metrics{{request_type="waiting",model="tensorrt_llm"}} {waiting}\n'
    assert parse_triton_metrics(page) is None


class _Absurd:
    """Figures that pass as counts (finite, below 2**53) but no engine could give: counters
    that jump to the bound, stand still or go back; a histogram whose cumulative counts fall."""

    def __init__(self):
        self.tick = 0

    async def kv_samples(self, namespace, selector, api=None):
        self.tick += 1
        big = float(2**52)
        counter = [big, big, 0.0, 1.0, big, 3.0][self.tick % 6]
        return [KVSample(1, 2**52, 2**52, waiting_requests=2**52, active_requests=2**52, max_requests=1,
                         replica="p", input_tokens_total=counter, finished_total=[1.0, 1.0, big, 0.0, 2.0, 2.0][self.tick % 6],
                         output_tokens_total=counter,
                         first_responses=((float("nan"), big), (0.1, counter), (float("inf"), 1.0)))]


async def test_withstood_absurd_counts_give_a_whole_replica_count_within_the_bounds():
    spec = parse_service_spec({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                               "autoscaling": {"mode": "builtin", "minReplicas": 1, "maxReplicas": 4,
                                               "ttftP99Milliseconds": 500}})
    from kiln.planner.perf import PerfModel

    cost = PerfModel(kv_tokens=500_000, max_batch=64, weight_bytes=16e9, kv_bytes_per_token=131072,
                     bandwidth=3.35e12, prefill_tokens_per_s=20_000, attention_s_per_position=1e-9,
                     max_num_tokens=8192).request_seconds
    now = [0.0]
    scaler = BuiltinAutoscaler(_Workload(), _Absurd(), clock=lambda: now[0])  # type: ignore[arg-type]
    for tick in range(12):
        now[0] = 15.0 * tick
        decision = await scaler.evaluate("llm", "svc", spec, 1, prefill_tokens_per_s=10_000,
                                         request_seconds=lambda prompt, output: cost(round(prompt), round(output)))
        assert decision is not None and isinstance(decision.desired, int) and 1 <= decision.desired <= 4
        assert decision.reason.isprintable()
    import math
    assert math.isfinite(scaler.correction("llm", "svc"))


def test_withstood_an_event_message_of_megabytes_with_control_characters_is_one_short_line():
    from kiln.controller.gather import _latest

    message = ("quota exceeded \x1b[2J\x1b]0;owned\x07\u202e\r\n\u2028" * 100_000) + "x" * 2**20
    said = _latest([{"message": message, "lastTimestamp": "2026-01-01T00:00:00Z"}], "2026-01-01T00:00:10Z", 60)
    assert said is not None and said.isprintable() and len(said) <= 400 and "\n" not in said


@pytest.mark.parametrize("change", [{"hidden_size": 2**63}, {"num_hidden_layers": -32}, {"num_hidden_layers": 0},
                                    {"vocab_size": 1e308}, {"intermediate_size": [8192]},
                                    {"text_config": {"hidden_size": -1}}])
def test_withstood_a_config_s_absurd_dimension_is_malformed_with_a_short_reason(change):
    from kiln.planner import model_config

    raw = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 16, "hidden_size": 2048,
           "intermediate_size": 8192, "num_attention_heads": 16, "num_key_value_heads": 8, "vocab_size": 32000,
           **change}
    with pytest.raises(ValueError) as refused:
        model_config("hf://someone/model", raw)
    assert len(str(refused.value)) < 200 and str(refused.value).isprintable()


def test_an_unschedulable_pod_s_message_reaches_a_status_as_printable_text():
    # The scheduler writes it, and so may anyone granted pods/status in the namespace.
    from kiln.controller.gather import _unscheduled

    pod = {"metadata": {"name": "x-0"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/4 nodes\x1b[2J are available:\n\u202eInsufficient nvidia.com/gpu" + "." * 1000}]}}
    name, message = _unscheduled([pod])
    assert name == "x-0"
    assert message.isprintable() and message.startswith("0/4 nodes[2J are available: Insufficient")
    assert len(message) <= 400


@pytest.mark.parametrize("raw, field", [({**_CONFIG, "hidden_size": float("nan")}, "hidden_size"),
                                        ({**_CONFIG, "num_hidden_layers": True}, "num_hidden_layers"),
                                        ({**_CONFIG, "vocab_size": float("-inf")}, "vocab_size"),
                                        ({**_CONFIG, "num_key_value_heads": False}, "num_key_value_heads"),
                                        ({**_CONFIG, "head_dim": 0}, "head_dim"),
                                        ({**_MIXTRAL, "num_local_experts": float("nan")}, "num_local_experts"),
                                        ({**_CONFIG, "text_config": {"num_attention_heads": True}}, "num_attention_heads")])
def test_withstood_a_config_s_nan_boolean_or_zero_dimension_is_malformed_naming_it(raw, field):
    from kiln.planner import model_config

    with pytest.raises(ValueError, match=field):
        model_config("hf://someone/model", raw)


async def test_withstood_a_config_nested_past_the_parser_s_depth_is_unknown_with_a_short_reason(tmp_path, monkeypatch):
    from kiln.controller.models import REASON_CHARS, ModelResolver
    from tests.support.fake_hub import Repo, fake_hub

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    body = b'{"architectures": ["LlamaForCausalLM"], "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}})
    with fake_hub({"someone/model": Repo({"config.json": body})}) as hub:
        resolved, why = await ModelResolver(endpoint=hub.url).resolve(spec, None)
    assert resolved is None and 0 < len(why) <= REASON_CHARS and why.isprintable(), why


def test_withstood_the_layout_search_over_a_model_no_gpu_count_splits_is_quick():
    """No layout of 512 GPUs, one a node, takes a prime number of layers: the search for the
    nearest counts that do walks every count to 2,048 and each count's divisors."""
    from kiln.errors import PlanRefused
    from kiln.planner import lookup_gpu, model_config, plan

    config, _ = model_config("hf://someone/model", {**_CONFIG, "num_hidden_layers": 1_000_003,
                                                    "num_attention_heads": 1021, "num_key_value_heads": 1021,
                                                    "head_dim": 1})
    spec = parse_service_spec({"model": {"source": "hf://someone/model"}, "gpus": 512, "gpu": {"perNode": 1}})
    started = time.monotonic()
    with pytest.raises(PlanRefused, match="spec.gpus"):
        plan(config, spec, lookup_gpu(spec.gpu.type))
    assert time.monotonic() - started < 2.0
