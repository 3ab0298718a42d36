"""A serving pod's metrics page, and a Prometheus answer, are a tenant's to write: a pod that
carries a service's labels and a port named ``metrics`` is scraped whoever made it, and a
single-node service may run its own image. The operator reads a bounded page, parses only
what it reads, and takes no sample from figures that are not finite counts; one service's
page never stalls the event loop every other service's reconcile runs on."""

from __future__ import annotations

import aiohttp.web
import pytest
from aiohttp.test_utils import TestServer

from kiln.autoscale import parse_triton_metrics
from kiln.controller import metrics as metrics_module
from kiln.controller.metrics import MAX_METRICS_PAGE_BYTES, PodMetrics
from kiln.controller.prometheus import MAX_PROMETHEUS_ANSWER_BYTES, PrometheusMetrics

KV = "nv_trt_llm_kv_cache_block_metrics"


def _page(max_blocks: str = "1000", used: str = "350") -> str:
    labels = 'model="tensorrt_llm",version="1"'
    return "\n".join([
        f"# TYPE {KV} gauge",
        f'{KV}{{kv_cache_block_type="max",{labels}}} {max_blocks}',
        f'{KV}{{kv_cache_block_type="used",{labels}}} {used}',
        f'{KV}{{kv_cache_block_type="tokens_per",{labels}}} 32',
    ]) + "\n"


class _Pods:
    def __init__(self, port: int, ip: str = "127.0.0.1") -> None:
        self.port, self.ip = port, ip

    async def list(self, api_version, kind, namespace, selector):
        return [{"metadata": {"name": "svc-0"},
                 "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": self.port}]}]},
                 "status": {"phase": "Running", "podIP": self.ip,
                            "conditions": [{"type": "Ready", "status": "True"}]}}]


async def _serve(handler, host="127.0.0.1"):
    app = aiohttp.web.Application()
    app.router.add_get("/{path:.*}", handler)
    return TestServer(app, host=host)


async def test_a_pod_on_an_ipv6_network_is_scraped():
    """An IPv6-only or IPv6-primary cluster gives pods IPv6 addresses: the URL must bracket
    it (an unbracketed one is refused by aiohttp as an invalid URL, which the scrape took for
    a pod that did not answer, and the builtin autoscaler got no sample at all)."""
    async def page(request):
        return aiohttp.web.Response(text=_page())

    async with await _serve(page, host="::1") as server:
        source = PodMetrics(_Pods(server.port, ip="::1"))  # type: ignore[arg-type]
        try:
            [sample] = await source.kv_samples("llm", "sel")
            assert sample.replica == "svc-0"
        finally:
            await source.close()


@pytest.mark.parametrize("pod_ip", ["evil.example/x?", "127.0.0.1:9/#", "", "[::1]", "10.0.0.1/metrics"])
async def test_a_pod_ip_that_is_not_an_address_is_not_fetched(pod_ip, monkeypatch):
    """status.podIP is the kubelet's to write, and so is anyone's with pods/status: the
    operator fetches only from an address, never from a name or a URL written there."""
    fetched = []

    async def fetch(self, url):
        fetched.append(url)
        return None

    monkeypatch.setattr(PodMetrics, "_fetch", fetch)
    source = PodMetrics(_Pods(8002, ip=pod_ip))  # type: ignore[arg-type]
    assert await source.kv_samples("llm", "sel") == [] and fetched == []


async def test_a_page_over_the_bound_is_not_read_to_its_end_nor_parsed():
    sent = {"bytes": 0}
    chunk = ("# " + "x" * 1021 + "\n").encode() * 64  # 64 KiB of comment lines

    async def huge(request):
        response = aiohttp.web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(50 * 16):  # 50 MiB
                await response.write(chunk)
                sent["bytes"] += len(chunk)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        return response

    async with await _serve(huge) as server:
        source = PodMetrics(_Pods(server.port))  # type: ignore[arg-type]
        try:
            assert await source.kv_samples("llm", "sel") == []
        finally:
            await source.close()
    # Left unread once over the bound (what the kernel's socket buffers took is the slack).
    assert sent["bytes"] < 20 * 2**20, sent


async def test_a_page_within_the_bound_is_read(monkeypatch):
    async def page(request):
        return aiohttp.web.Response(text=_page())

    async with await _serve(page) as server:
        source = PodMetrics(_Pods(server.port))  # type: ignore[arg-type]
        try:
            [sample] = await source.kv_samples("llm", "sel")
        finally:
            await source.close()
    assert (sample.max_blocks, sample.used_blocks, sample.replica) == (1000, 350, "svc-0")
    assert MAX_METRICS_PAGE_BYTES >= 1 * 2**20  # far above a real Triton page (tens of KiB)


def test_a_page_of_many_other_series_costs_no_parse_of_them(monkeypatch):
    """Lines of other metrics are skipped before the exposition parser sees them."""
    parsed: list[str] = []
    real = metrics_module.parse_triton_metrics.__globals__["text_string_to_metric_families"]

    def counting(text):
        parsed.append(text)
        return real(text)

    monkeypatch.setitem(metrics_module.parse_triton_metrics.__globals__, "text_string_to_metric_families", counting)
    noise = "".join(f'other_metric{{i="{i}"}} {i}\n' for i in range(20000))
    sample = parse_triton_metrics(noise + _page())
    assert sample is not None and sample.max_blocks == 1000
    assert sum(map(len, parsed)) < 2000


@pytest.mark.parametrize("max_blocks, used", [
    ("NaN", "1"), ("+Inf", "1"), ("-Inf", "1"), ("1e400", "1"), ("-5", "1"), ("1000", "NaN"),
    ("1000", "1e300"),
])
def test_figures_that_are_not_finite_counts_give_no_sample(max_blocks, used):
    assert parse_triton_metrics(_page(max_blocks, used)) is None


def _answer(padding: int) -> bytes:
    """A query's answer: one pod's KV block figures, then ``padding`` more series."""
    figures = [f'{{"metric":{{"pod":"p","kv_cache_block_type":"{kind}"}},"value":[0,"{value}"]}}'
               for kind, value in (("max", 1000), ("used", 350), ("tokens_per", 32))]
    padded = figures + ['{"metric":{"pod":"q"},"value":[0,"1"]}'] * padding
    return ('{"status":"success","data":{"resultType":"vector","result":[' + ",".join(padded) + "]}}").encode()


@pytest.mark.parametrize("padding, samples", [(0, 1), (MAX_PROMETHEUS_ANSWER_BYTES // 36, 0)])
async def test_a_prometheus_answer_over_the_bound_gives_no_samples(padding, samples):
    body = _answer(padding)

    async def answer(request):
        return aiohttp.web.Response(body=body, content_type="application/json")

    async with await _serve(answer) as server:
        source = PrometheusMetrics(f"http://127.0.0.1:{server.port}")
        try:
            found = await source.kv_samples("llm", "app.kubernetes.io/instance=svc")
        finally:
            await source.close()
    assert len(found) == samples
    assert (len(body) > MAX_PROMETHEUS_ANSWER_BYTES) == (samples == 0)
