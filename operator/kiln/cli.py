"""The `kiln` command line: crds | plan | render | simulate | run | model-list | demo.

Bad input exits 2 with one line naming the field path; there are no tracebacks for users.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .api import AutoscalingMode
from .api.crd import crds
from .api.llmservice import GATEWAY_REF_MAX, GATEWAY_REF_PATTERN, MODEL_SOURCE_PATTERN
from .api.loading import load_yaml, read_bounded, read_yaml_file
from .api.common import API_VERSION
from .api.validation import parse_service_manifest, quote
from .errors import KilnError, PlanRefused, SpecInvalid
from .plot import check_plot_target, plot_policies
from .planner import GPU, ModelConfig, Plan, catalog_config, model_config, plan, require_gpu
from .render import ServiceRef, render
from .render.platform import GATEWAY_PROVIDERS
from .sim.compare import LEAD_IN_SECONDS, SLO_GOAL
from .sim.policies import POLICIES
from .toolchain import TRTLLM_VERSION
from . import __version__

__all__ = ["EXIT_CODES", "main", "parser", "run_policy"]

# Documented per command (epilog of --help and the CLI reference); 0 always means success.
EXIT_BAD_INPUT = 2
EXIT_UNKNOWN = 3
# A failure no check foresaw: never 1, which `kiln plan` says for "does not fit" (sysexits'
# EX_SOFTWARE).
EXIT_INTERNAL = 70
# The log lines of the long-running commands (run, model-list).
_LOG_FORMAT = "[%(asctime)s] %(name)-28.28s [%(levelname)-7s] %(message)s"
# `kiln simulate`'s replica ceiling for a service that does not autoscale (a what-if).
SIMULATED_MAX_REPLICAS = 16
EXIT_CODES = {
    "crds": "0",
    "plan": "0 fits, 1 does not fit, 2 bad input, 3 verdict unknown (the model is not in the "
            "catalog: pass --model-config)",
    "render": "0, 2 bad input or does not fit",
    "simulate": "0, 2 bad input",
    "run": "0 stopped, 2 no cluster configured or the Lease refused (403), 4 lost the Lease "
           "(--leader-election-namespace)",
    "demo": "0 every service Ready and the autoscaler scaled up and back down, 1 otherwise, 2 bad input",
    "model-list": "0 stopped, 2 bad input",
}


def _domain(text: str) -> str:
    """An argparse type: a DNS domain (RFC 1123 labels, dot-separated)."""
    if len(text) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*",
                                            text):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not a DNS domain")
    return text


def _region(text: str) -> str:
    """An argparse type: an S3 region name (us-east-1, or what an S3-compatible store calls its
    own), nothing that could carry more into the build's environment."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a region name (lowercase letters, "
                                         "digits and '-')")
    return text


def _object_ref(text: str) -> str:
    """An argparse type: ``namespace/name`` (a DNS label, a DNS subdomain)."""
    if len(text) > GATEWAY_REF_MAX or not re.fullmatch(GATEWAY_REF_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not NAMESPACE/NAME")
    return text


def _at_least(kind: type, low: float, *, above: bool = False, most: float = math.inf) -> Any:
    """An argparse type: a ``kind`` number at least ``low`` (more than it if ``above``), and at
    most ``most``."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {'more than' if above else 'at least'} {low:g} (got {text[:40]})")
        if value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g} (got {text[:40]})")
        return value
    return parse


_POSITIVE = _at_least(float, 0, above=True)
_NON_NEGATIVE = _at_least(float, 0)
_PORT = _at_least(int, 1, most=65535)
_DAY = 86400.0


def _namespace(text: str) -> str:
    """An argparse type: a namespace's name (a DNS label)."""
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", text):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not a namespace name (lowercase letters, digits "
                                         "and '-', at most 63)")
    return text


def _model_source(text: str) -> str:
    """An argparse type: a model source as spec.model.source writes it."""
    if len(text) > 512 or not re.fullmatch(MODEL_SOURCE_PATTERN, text) or ".." in text.split("/"):
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not a model source (hf://org/name, s3://bucket/path "
                                         "or pvc://claim/path)")
    return text


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _load_manifest(path: str) -> dict[str, Any]:
    if not path:
        raise SpecInvalid("--file: empty; name a manifest, or '-' for standard input")
    docs = load_yaml(read_bounded(sys.stdin.buffer, "stdin"), "stdin") if path == "-" else read_yaml_file(Path(path))
    services = [d for d in docs if isinstance(d, dict) and d.get("kind") == "LLMService"]
    if len(services) != 1:
        candidates = services or docs
        if len(candidates) != 1:
            raise SpecInvalid(f"{path}: expected one LLMService, found {len(services)}")
        [only] = candidates
        kind = only.get("kind") if isinstance(only, dict) else None
        if isinstance(kind, str) and kind:
            raise SpecInvalid(f"kind: {kind[:60]!r} in {path} is not an LLMService")
        return only  # type: ignore[no-any-return]
    if services[0].get("apiVersion") != API_VERSION:
        raise SpecInvalid(f"apiVersion: must be {API_VERSION} (got {quote(services[0].get('apiVersion'))} "
                          f"in {path})")
    return services[0]


def _model_config(args: argparse.Namespace, source: str) -> tuple[ModelConfig | None, str]:
    if args.model_config is not None:
        if not args.model_config:
            raise SpecInvalid("--model-config: empty; name a config.json")
        try:
            with Path(args.model_config).open("rb") as stream:
                raw = json.loads(read_bounded(stream, f"--model-config: {args.model_config}", what="a config.json"))
        except OSError as error:
            raise SpecInvalid(f"--model-config: cannot read {args.model_config}: {error.strerror}") from None
        except (ValueError, RecursionError) as error:  # bad JSON, a 5,000-digit number, deep nesting
            why = " ".join(str(error).split())[:120] if isinstance(error, ValueError) else "nested too deep"
            raise SpecInvalid(f"--model-config: {args.model_config} is not valid JSON ({why})") from None
        if not isinstance(raw, dict):
            raise SpecInvalid(f"--model-config: {args.model_config} must be a JSON object (a Hugging Face "
                              f"config.json), not {type(raw).__name__ if raw is not None else 'null'}")
    elif source.startswith("hf://"):
        if catalog_config(source.removeprefix("hf://")) is None:
            return None, f"{source} is not in Kiln's catalog; pass --model-config config.json"
        raw = None
    else:
        return None, "pass --model-config config.json for non-hf:// sources"
    try:
        return model_config(source, raw)
    except ValueError as error:
        raise SpecInvalid(f"--model-config: {error}") from None


def _prepare(args: argparse.Namespace) -> tuple[dict[str, Any], Any, GPU, ModelConfig | None, Plan]:
    manifest = _load_manifest(args.file)
    metadata, spec = parse_service_manifest(manifest)
    memory = getattr(args, "gpu_memory_gib", None) or spec.gpu.memory_gi_b
    gpu = require_gpu(spec.gpu.type, memory, spec.gpu.arch)
    model, why = _model_config(args, spec.model.source)
    result = plan(model, spec, gpu)
    if model is None:
        result = Plan(**{**result.__dict__, "reasons": (why,)})
    return metadata, spec, gpu, model, result


def cmd_crds(args: argparse.Namespace) -> int:
    objects = crds()
    if args.output_dir is not None:
        if not args.output_dir:
            raise SpecInvalid("--output-dir: empty; name a folder, or leave the flag out to print the CRDs")
        out = Path(args.output_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
            for crd in objects:
                (out / f"{crd['metadata']['name']}.yaml").write_text(dump_yaml([crd]))
        except OSError as error:
            raise SpecInvalid(f"--output-dir: cannot write into {out}: {error.strerror}") from None
    else:
        sys.stdout.write(dump_yaml(objects))
    return 0


def _print_compare(spec: Any, gpu: GPU, model: ModelConfig | None, output: str, why: str) -> int:
    from .planner.compare import compare

    if model is None:
        raise SpecInvalid(f"--compare: {why}" if why else "--compare needs the model config: pass --model-config "
                          "config.json")
    rows = compare(model, spec, gpu)
    if output == "json":
        print(json.dumps({"gpu": gpu.name, "gpus": spec.gpus, "precisions": rows}, indent=2))
        return 0
    header = ("PRECISION", "FITS", "WEIGHTS/GPU", "KV TOKENS", "SEQS", "FEWEST GPUS", "DECODE", "NOTE")
    # What does not fit has no KV cache and no sequences: those cells stay blank.
    table = [header] + [(
        r["precision"], {True: "yes", False: "no", None: "?"}[r["fits"]],
        f"{r['weightGiBPerGpu']:.1f} GiB", f"{r['kvCacheTokens']:,}" if r["kvCacheTokens"] else "",
        (f"{r['maxConcurrentSequences']}" + ("*" if r["sequencesCappedByMaxBatchSize"] else ""))
        if r["maxConcurrentSequences"] is not None else "",
        str(r["fewestGpus"] or "-"), f"x{r['relativeDecodeSpeed']:.2f}" if r["relativeDecodeSpeed"] else "-",
        r["note"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"{spec.gpus} x {gpu.name} ({gpu.memory_gib:.1f} GiB), maxSeqLen={spec.engine.max_seq_len}; "
          "DECODE is the bandwidth-bound speed relative to bf16")
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if any(r["sequencesCappedByMaxBatchSize"] for r in rows):
        print(f"* capped by engine.maxBatchSize={spec.engine.max_batch_size}: the KV cache holds more "
              "sequences; raise maxBatchSize to run them")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    _, spec, gpu, model, result = _prepare(args)
    if args.compare:
        return _print_compare(spec, gpu, model, args.output, "; ".join(result.reasons))
    if args.output == "json":
        print(json.dumps(result.status().wire(), indent=2))
    else:
        gib = 1024**3
        print(f"GPU            {gpu.name} ({gpu.memory_gib:.1f} GiB, {gpu.arch}) x {spec.gpus}")
        print(f"layout         TP={result.tensor_parallel} PP={result.pipeline_parallel}")
        if result.weight_bytes_per_gpu is not None:
            print(f"weights/GPU    {result.weight_bytes_per_gpu / gib:.2f} GiB ({spec.precision})")
            print(f"buffers/GPU    {(result.activation_bytes_per_gpu or 0) / gib:.2f} GiB")
            print(f"KV/token/GPU   {result.kv_bytes_per_token_per_gpu} bytes "
                  f"({result.kv_cache_dtype.value})")
            print(f"KV tokens      {result.kv_cache_tokens} per replica")
            print(f"sequences      {result.max_concurrent_sequences} at maxSeqLen="
                  f"{spec.engine.max_seq_len}")
        if result.gpu_weights_percent is not None:
            print(f"on GPU         {result.gpu_weights_percent:.0%} of the weights (weight streaming)")
        verdict = {True: "fits", False: "does NOT fit", None: "unknown"}[result.fits]
        if not result.buildable:
            verdict = "cannot be built with TensorRT-LLM " + TRTLLM_VERSION
        print(f"verdict        {verdict}")
        for reason in result.reasons:
            print(f"  - {reason}")
        for note in result.notes:
            print(f"  note: {note}")
    return {True: 0, False: 1, None: EXIT_UNKNOWN}[result.fits]


def cmd_render(args: argparse.Namespace) -> int:
    metadata, spec, gpu, _, result = _prepare(args)
    if result.fits is False:
        raise PlanRefused("does not fit: " + "; ".join(result.reasons))
    ref = ServiceRef(metadata["name"], metadata.get("namespace", "default"))
    objects = render(ref, spec, result, gpu).objects()
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        sys.stdout.write(dump_yaml(objects))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .autoscale import LawParams
    from .sim import Fleet, PerfModel, compare, load_trace, routing_for
    from .render.wake import concurrency_target
    from .sim.references import causal_floor

    if args.plot:
        check_plot_target(Path(args.plot))
    _, spec, gpu, model, result = _prepare(args)
    if model is None or not result.fits:
        raise SpecInvalid("the service must fit to be simulated: " + "; ".join(result.reasons))
    policies = args.policy or list(POLICIES)
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise SpecInvalid(f"--policy: unknown {', '.join(unknown)}; choose from {', '.join(POLICIES)}")
    outage = None
    if args.metrics_outage:
        try:
            start, seconds = (float(x) for x in args.metrics_outage.split(":"))
        except ValueError:
            raise SpecInvalid("--metrics-outage: expected START:SECONDS") from None
        if not (math.isfinite(start) and math.isfinite(seconds) and start >= 0 and seconds > 0):
            raise SpecInvalid(f"--metrics-outage: START at least 0 and SECONDS more than 0, both finite "
                              f"(got {args.metrics_outage[:40]})")
        outage = (start, seconds)
    requests = load_trace(Path(args.trace), args.rate_scale, args.time_scale)
    scaling = spec.autoscaling
    # A service that autoscales keeps to its own maxReplicas, as the operator would; one that
    # does not is simulated as if it did, within 1..16. --max-replicas overrides either.
    if args.max_replicas is not None:
        ceiling = args.max_replicas
    elif scaling.mode != AutoscalingMode.NONE:
        ceiling = scaling.max_replicas
    else:
        ceiling = SIMULATED_MAX_REPLICAS
    low = max(1, scaling.min_replicas)
    high = max(low, ceiling)
    params = LawParams.for_service(scaling, min_replicas=low, max_replicas=high, cold_start=args.cold_start)
    routing = args.routing if args.routing != "auto" else routing_for(spec.gateway)
    fleet = Fleet(PerfModel.from_plan(result, spec, gpu, model), spec.gpus, cold_start=args.cold_start,
                  routing=routing)
    show = args.output != "json" and sys.stderr.isatty()

    def progress(name: str, share: float) -> None:
        print(f"\r  {name:9s} [{'#' * int(share * 30):30s}] {share:4.0%}", end="", file=sys.stderr)

    chosen: dict[str, str] = {}
    results = compare(requests, fleet, params, args.slo_ttft_ms / 1000, policies,
                      outage=outage, progress=progress if show else None, lead_in_seconds=args.lead_in,
                      keda_http_target=concurrency_target(spec, result), chosen=chosen)
    floor = None
    if args.floor:
        floor, _ = causal_floor(requests, lambda d: (), fleet, args.slo_ttft_ms / 1000, SLO_GOAL,
                                high, low, progress=(lambda share: progress("floor", share)) if show else None)
    if show:
        print("\r" + " " * 50 + "\r", end="", file=sys.stderr)
    rejected = max((r.rejected for r in results.values() if r is not None), default=0)
    if rejected == len(requests):
        raise SpecInvalid(f"--trace: all {rejected} of its requests are over the engine's limits (maxInputLen "
                          f"{spec.engine.max_input_len}, maxSeqLen {spec.engine.max_seq_len}): raise "
                          "spec.engine.maxInputLen and maxSeqLen, or replay another trace")
    if args.plot:
        plot_policies(results, Path(args.plot), args.slo_ttft_ms / 1000,
                      title=f"{Path(args.trace).name}: autoscaling policies")
    if args.output == "json":
        report = {"policies": {n: r.wire() if r else None for n, r in results.items()},
                  "chosen": chosen, "routing": routing}
        if floor is not None:
            report["floor"] = {"gpuHours": round(floor, 3)}
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(requests)} requests, SLO: TTFT <= {args.slo_ttft_ms:.0f} ms, cold start {args.cold_start:.0f} s, "
          f"{routing} routing")
    if rejected:
        limits = spec.engine
        print(f"{rejected} of them over the engine's limits (maxInputLen {limits.max_input_len}, maxSeqLen "
              f"{limits.max_seq_len}): refused at once, as the engine would, and not counted in the SLO")
    print(f"{'POLICY':12s} {'GPU-HOURS':>10s} {'SLO':>7s} {'TTFT P50':>9s} {'TTFT P99':>9s} {'SCALES':>7s} "
          f"{'MAX':>4s} {'COLD':>5s}")
    for name, r in results.items():
        if r is None:
            print(f"{name:12s} {'no swept setting meets the SLO goal':>40s}")
            continue
        print(f"{name:12s} {r.gpu_hours:10.2f} {r.slo_attainment:7.2%} {r.ttft_p50_ms:8.0f}ms "
              f"{r.ttft_p99_ms:8.0f}ms {r.scale_events:7d} {r.max_replicas:4d} {r.cold_starts:5d}")
    if floor is not None:
        print(f"{'floor':12s} {floor:10.2f}  no schedule goes below it (each cold start's arrivals within "
              f"the SLO's budget)")
    for name, how in chosen.items():
        print(f"{name}: {how}"[:100])
    return 0


def run_policy(args: argparse.Namespace) -> Any:
    """The operator's Policy from ``kiln run``'s flags (the chart's Deployment sets them)."""
    from .decide.policy import Policy, base_url
    from .render import Platform

    for url in args.allowed_prometheus_url or []:
        base_url(url, "--allowed-prometheus-url")  # a bad flag stops the operator at start
    if bool(args.model_list_configmap) != bool(args.model_list_gateway):
        raise SpecInvalid("--model-list-configmap and --model-list-gateway go together: the ConfigMap keeps "
                          "the model lists of the Gateways named")
    endpoints = {flag: str(base_url(url, flag)).rstrip("/") if url else None
                 for flag, url in (("--s3-endpoint", args.s3_endpoint), ("--hub-endpoint", args.hub_endpoint))}
    platform = Platform(cluster_domain=args.cluster_domain, s3_endpoint=endpoints["--s3-endpoint"],
                        s3_region=args.s3_region or None, hub_endpoint=endpoints["--hub-endpoint"],
                        gateway_provider=args.gateway_provider or None)
    return Policy(public_models=frozenset(args.public_model or []),
                  prometheus_urls=tuple(args.allowed_prometheus_url or []),
                  multi_node_custom_images=args.multi_node_custom_images,
                  delete_unreferenced_engine_files=args.delete_unreferenced_engine_files,
                  platform=platform, model_list=args.model_list_configmap,
                  model_list_gateways=tuple(dict.fromkeys(args.model_list_gateway or ())))


def cmd_run(args: argparse.Namespace) -> int:
    from .controller.context import MAX_CONCURRENT_RECONCILES
    from .controller.lease import LEASE_NAME
    from .controller.operator import run_against_kubeconfig

    slots = MAX_CONCURRENT_RECONCILES if args.max_concurrent_reconciles is None else args.max_concurrent_reconciles
    if slots < 1:
        print("error: --max-concurrent-reconciles must be at least 1", file=sys.stderr)
        return 2
    if args.metrics_port == args.health_port:
        print(f"error: --metrics-port and --health-port are both {args.health_port}: give them two ports",
              file=sys.stderr)
        return 2
    # The operator's own messages from INFO (the Lease, the sweep), everyone else's from WARNING.
    logging.basicConfig(level=logging.WARNING, format=_LOG_FORMAT)
    logging.getLogger("kiln").setLevel(logging.INFO)
    asyncio.run(run_against_kubeconfig(args.namespace or None, metrics_port=args.metrics_port,
                                       policy=run_policy(args),
                                       max_concurrent_reconciles=slots,
                                       lease_namespace=args.leader_election_namespace,
                                       lease_name=args.leader_election_name or LEASE_NAME,
                                       health_port=args.health_port))
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    import aiohttp.web

    from .modellist import model_list_app

    directory = Path(args.dir)
    if not directory.is_dir():
        raise SpecInvalid(f"--dir: {args.dir[:200]} is not a directory")
    logging.basicConfig(level=logging.WARNING, format=_LOG_FORMAT)
    print(f"kiln model-list: GET /v1/models on port {args.port}, the lists in {directory}", file=sys.stderr,
          flush=True)
    aiohttp.web.run_app(model_list_app(directory), port=args.port, print=None, access_log=None)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import BUNDLED_EXAMPLES, run_demo

    examples = Path(args.examples) if args.examples else BUNDLED_EXAMPLES
    if not examples.is_dir():
        raise SpecInvalid(f"--examples: {examples} is not a directory")
    # kopf's own log is for operators of the operator; KILN_DEBUG=1 shows it. The levels are
    # given back afterwards, so a process that runs the demo in-process keeps its logging.
    quiet = {"kopf": logging.DEBUG if os.environ.get("KILN_DEBUG") else logging.CRITICAL,
             "aiohttp": logging.CRITICAL}
    before = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        return asyncio.run(run_demo(examples, timeout=args.timeout, verbose=args.verbose,
                                    shown_as=args.examples or "examples/"))
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kiln", description=__doc__.splitlines()[0] if __doc__ else "")
    top.add_argument("--version", action="version", version=f"kiln {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    crd = sub.add_parser("crds", help="print the CRDs generated from kiln.api")
    crd.add_argument("-o", "--output-dir", help="write one file per CRD into this directory")
    crd.set_defaults(func=cmd_crds)
    for name, func, formats, helptext in (
            ("plan", cmd_plan, ("text", "json"), "will it fit, and with how much KV cache"),
            ("render", cmd_render, ("yaml", "json"), "every object the operator would apply")):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("-f", "--file", required=True, help="LLMService manifest ('-' for stdin)")
        cmd.add_argument("--model-config", help="a Hugging Face config.json")
        cmd.add_argument("--gpu-memory-gib", type=_at_least(float, 1, most=1024),
                         help="override the GPU memory (1-1024, as spec.gpu.memoryGiB)")
        cmd.add_argument("-o", "--output", choices=formats, default=formats[0])
        if name == "plan":
            cmd.add_argument("--compare", action="store_true",
                             help="every precision side by side: memory, KV tokens, fewest GPUs, speed")
        cmd.set_defaults(func=func)
    sim = sub.add_parser("simulate", help="replay a request trace under autoscaling policies")
    sim.add_argument("-f", "--file", required=True, help="LLMService manifest ('-' for stdin)")
    sim.add_argument("--trace", required=True, help="Azure CSV, Mooncake JSONL or timestamp_s,input_tokens,output_tokens")
    sim.add_argument("--model-config", help="a Hugging Face config.json")
    sim.add_argument("--policy", action="append",
                     help=f"one of {', '.join(POLICIES)}; repeat for several (default: all)")
    sim.add_argument("--slo-ttft-ms", type=_POSITIVE, default=2000.0)
    sim.add_argument("--cold-start", type=_at_least(float, 0, most=_DAY), default=90.0,
                     help="seconds until a new replica serves (default 90: 7-70B pods with cached weights take 1-2 min)")
    sim.add_argument("--rate-scale", type=_at_least(float, 0, above=True, most=1000), default=1.0,
                     help="requests per request of the trace (0.5 keeps every other one)")
    sim.add_argument("--time-scale", type=_at_least(float, 0.001, most=1000), default=1.0,
                     help="stretch the trace's time (2: the same requests over twice as long)")
    sim.add_argument("--max-replicas", type=_at_least(int, 1, most=1000), help="upper bound for every policy (default: the "
                     f"manifest's autoscaling.maxReplicas, or {SIMULATED_MAX_REPLICAS} without autoscaling)")
    sim.add_argument("--metrics-outage", help="START:SECONDS with no metrics")
    sim.add_argument("--lead-in", type=_at_least(float, 0, most=_DAY), default=LEAD_IN_SECONDS,
                     help="seconds of the trace's opening replayed first, mirrored and uncounted, so "
                          "the reactive policies start as on a running service (0: start cold)")
    sim.add_argument("--routing", choices=("auto", "least-loaded", "random"), default="auto",
                     help="how requests reach a replica: least-loaded (the Gateway's endpoint picker), "
                          "random (a plain Service, as kube-proxy balances); auto: least-loaded with "
                          "spec.gateway, else random")
    sim.add_argument("--floor", action="store_true",
                     help="also the GPU-hours no schedule goes below at this cold start and SLO: how far "
                          "clairvoyant can be from the best possible")
    sim.add_argument("--plot", help="write load, replicas and TTFT over time to this PNG")
    sim.add_argument("-o", "--output", choices=("text", "json"), default="text")
    sim.set_defaults(func=cmd_simulate)
    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument("-n", "--namespace", action="append", type=_namespace, help="watch only these namespaces")
    run.add_argument("--metrics-port", type=_at_least(int, 0, most=65535), default=8081,
                     help="serve the operator's Prometheus metrics here (0: off)")
    run.add_argument("--health-port", type=_PORT, default=8080,
                     help="serve /healthz here, for the pod's probes (also while waiting for the Lease)")
    run.add_argument("--max-concurrent-reconciles", type=int, metavar="N",
                     help="reconciles in flight at once (default: 2; more helps only where the "
                          "API server has CPU to spare)")
    run.add_argument("--public-model", action="append", metavar="SOURCE", type=_model_source,
                     help="a model source whose engines built with a token serve services "
                          "without credentials (repeat)")
    run.add_argument("--allowed-prometheus-url", action="append", metavar="URL",
                     help="a Prometheus base URL services may name (repeat; none: any)")
    run.add_argument("--cluster-domain", metavar="DOMAIN", type=_domain, default="cluster.local",
                     help="the cluster's DNS domain (the kubelets' --cluster-domain; default "
                          "cluster.local), in the fully qualified names Kiln renders")
    run.add_argument("--s3-endpoint", metavar="URL",
                     help="the S3-compatible endpoint builds read s3:// sources from (MinIO, Ceph; "
                          "default: AWS S3)")
    run.add_argument("--s3-region", metavar="REGION", type=_region,
                     help="the region builds sign S3 requests for (AWS_DEFAULT_REGION)")
    run.add_argument("--hub-endpoint", metavar="URL",
                     help="a Hugging Face Hub mirror for hf:// sources, for builds and the "
                          "operator's config reads (HF_ENDPOINT; default: huggingface.co)")
    run.add_argument("--gateway-provider", choices=GATEWAY_PROVIDERS,
                     help="the Gateway implementation that routes spec.gateway services, where it "
                          "needs an object of its own (istio: a DestinationRule for TLS to the "
                          "endpoint picker)")
    run.add_argument("--model-list-configmap", metavar="NAMESPACE/NAME", type=_object_ref,
                     help="keep the GET /v1/models list of each --model-list-gateway in this "
                          "ConfigMap, for `kiln model-list` to serve (the chart's gateway.modelList)")
    run.add_argument("--model-list-gateway", action="append", metavar="NAMESPACE/NAME", type=_object_ref,
                     help="a Gateway whose model list --model-list-configmap keeps (repeat)")
    run.add_argument("--multi-node-custom-images", action="store_true",
                     help="let multi-node services set spec.runtime.image (their leader holds "
                          "a token that may exec into pods)")
    run.add_argument("--delete-unreferenced-engine-files", action="store_true",
                     help="when an unreferenced LLMEngine is deleted, remove its cache entry too "
                          "(a Job in the cache's namespace)")
    run.add_argument("--leader-election-namespace", metavar="NAMESPACE", type=_namespace,
                     help="act only while holding the Lease --leader-election-name in this namespace "
                          "(the chart sets it to the release's namespace; a second operator waits)")
    run.add_argument("--leader-election-name", metavar="NAME", type=_domain,
                     help="the Lease's name (default: kiln-operator; the chart sets <fullname>-operator, "
                          "so that two releases in one namespace elect apart)")
    run.set_defaults(func=cmd_run)
    models = sub.add_parser("model-list", help="serve GET /v1/models for the Gateways (the files of the "
                                               "operator's --model-list-configmap)")
    models.add_argument("--dir", default="/etc/kiln/model-list",
                        help="the ConfigMap's files (default: /etc/kiln/model-list)")
    models.add_argument("--port", type=_PORT, default=8080, help="the HTTP port (default: 8080)")
    models.set_defaults(func=cmd_model_list)
    demo = sub.add_parser("demo", help="operator + API emulator + simulated GPU cluster")
    demo.add_argument("--examples", help="directory of manifests to apply (default: the bundled examples)")
    demo.add_argument("-v", "--verbose", action="store_true",
                      help="every status change, simulated cluster event and autoscaler decision")
    demo.add_argument("--timeout", type=_POSITIVE, default=90.0, help="seconds to wait for every service to be Ready")
    demo.set_defaults(func=cmd_demo)
    for name, command in sub.choices.items():
        command.epilog = f"exit codes: {EXIT_CODES[name]}; {EXIT_INTERNAL} an internal error (please report it)"
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KilnError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as error:  # the output (a full disk, a closed pipe) or a file the command wrote
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # the last line of defence: one line, never a traceback
        what = " ".join(str(error).split())[:200]
        print(f"error: internal error, please report it: {type(error).__name__}: {what}", file=sys.stderr)
        return EXIT_INTERNAL
    return code


if __name__ == "__main__":
    sys.exit(main())
