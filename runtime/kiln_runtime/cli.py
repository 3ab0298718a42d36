"""The ``kiln-runtime`` command: what runs inside the engine-build and serving containers.

    kiln-runtime build [--spec FILE] [--dry-run]
    kiln-runtime triton-repo --engine-dir D --out R [--templates T]
    kiln-runtime serve
    kiln-runtime djl-properties --spec FILE --out DIR
    kiln-runtime smoke --url HOST:PORT | --openai-url URL --model NAME
    kiln-runtime alive                                (the serving container's liveness probe)
    kiln-runtime delete-entry --cache-root ROOT --key KEY   (ROOT: a path or s3://bucket/prefix)
    kiln-runtime download / calibration-set / set-gpus-per-node / verify / publish
                                                   (the build's own steps)

Exit codes: 0 ok, 1 a step failed (the message names it), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import cache, checkpoint, source, toolchain
from .alive import GENERATION_TIMEOUT, STALL_SECONDS, STATE_FILE, check
from .build import dry_run, run_build
from .djl import DJLSettings, write_properties
from .errors import BadSpec, StepFailed
from .group import (check_worker, group_from_env, mark_ready, rsh_argv, wait_for_workers, wait_forever,
                    worker_index)
from .safe_io import MAX_JSON_BYTES, load_json, open_regular
from .serve import SERVE_SPEC_ENV, metrics_url, parse_serve_spec, prepare, run_server, server_argv
from .spec import load_build_spec
from .steps import Layout, check_model
from .triton_repo import RepoSettings, write_model_repo

__all__ = ["main", "parser"]


def cmd_build(args: argparse.Namespace) -> int:
    spec = load_build_spec(args.spec)
    if args.dry_run:
        config = None
        if args.model_config:
            try:
                with open_regular(Path(args.model_config)) as handle:
                    data = handle.read(MAX_JSON_BYTES + 1)
            except OSError as error:
                raise BadSpec(f"--model-config: cannot read {args.model_config}: {error}") from None
            if len(data) > MAX_JSON_BYTES:
                raise BadSpec(f"--model-config: {args.model_config} is larger than {MAX_JSON_BYTES} bytes")
            config = load_json(data, f"--model-config: {args.model_config}")
        print(json.dumps(dry_run(spec, config), indent=2))
        return 0
    run_build(spec)
    return 0


def cmd_calibration_set(args: argparse.Namespace) -> int:
    source.fetch_calibration(args.source, Path(args.out))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    source.download(args.source, args.revision, Path(args.out))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    cache.verify_engine(Path(args.engine_dir), args.world_size)
    return 0


def cmd_set_gpus_per_node(args: argparse.Namespace) -> int:
    mapping = checkpoint.set_gpus_per_node(Path(args.checkpoint_dir), args.gpus_per_node)
    print(json.dumps({"mapping": mapping}))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    staging = Path(args.staging)
    if not staging.is_dir():
        raise BadSpec(f"--staging: {staging} is not a directory")
    manifest = cache.publish(staging, Path(args.cache), args.key, None, {},
                             {"tensorrt_llm": toolchain.TRTLLM_VERSION}, 0.0)
    print(json.dumps({"engineKey": args.key, "engineBytes": manifest["engineBytes"]}))
    return 0


def cmd_delete_entry(args: argparse.Namespace) -> int:
    """Remove one engine's cache entry (the operator's opt-in sweep of unreferenced engines)."""
    root = str(args.cache_root)
    if root.startswith("s3://"):
        count = cache.delete_s3_entry(source._s3_client(), root, args.key)
        print(json.dumps({"engineKey": args.key, "deletedObjects": count}))
    else:
        removed = cache.delete_entry(Path(root), args.key)
        print(json.dumps({"engineKey": args.key, "deleted": removed}))
    return 0


def cmd_triton_repo(args: argparse.Namespace) -> int:
    engine_dir = Path(args.engine_dir)
    written = write_model_repo(Path(args.templates or toolchain.triton_templates()), Path(args.out),
                               RepoSettings(engine_dir=engine_dir,
                                            tokenizer_dir=Path(args.tokenizer_dir or engine_dir.parent / "tokenizer"),
                                            kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
                                            decoupled=not args.no_streaming,
                                            instances=args.instances))
    for path in written:
        print(path)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """One node (``--role single``), or one pod of a multi-node LeaderWorkerSet group: the
    leader waits for its workers and runs mpirun over the whole group; a worker writes the
    same model repository and waits for its ranks."""
    spec = parse_serve_spec(os.environ.get(SERVE_SPEC_ENV))
    repo = Path(args.model_repo)
    group = None
    if args.role != "single":
        if spec.gpus_per_node < 1:
            raise BadSpec(f"{SERVE_SPEC_ENV}: gpusPerNode is required for --role {args.role}")
        group = group_from_env(spec.gpus_per_node, args.leader_address, args.group_size)
    if args.dry_run:
        if args.role == "worker":
            print(f"worker of {group.leader_address if group else '?'}: waits for the leader's ranks")
        else:
            print(shlex.join(server_argv(spec, repo, group)))
        return 0
    index = 0 if args.role == "leader" else worker_index(group) if args.role == "worker" else None
    prepare(spec, repo, Path(args.templates or toolchain.triton_templates()),
            group if index is not None else None, index or 0)
    if args.role == "worker":
        mark_ready(repo)
        assert group is not None
        return wait_forever(metrics_url(spec, group.leader_address))
    if group is not None:
        wait_for_workers(group, args.wait_timeout, repo=repo)
    return run_server(spec, repo, group=group)


def cmd_rsh(args: argparse.Namespace) -> int:
    """mpirun's remote launcher: start ``command`` in the worker pod ``host`` by kubectl exec."""
    check_worker(args.host)
    argv = rsh_argv(args.host, args.command)
    os.execvp(argv[0], argv)
    return 127  # not reached


def cmd_djl_properties(args: argparse.Namespace) -> int:
    spec = load_build_spec(args.spec)
    limits = spec.limits
    if args.download:  # the DJL build's first half: its partition script does the rest
        print(f"[download] {spec.source}@{spec.revision}", file=sys.stderr, flush=True)
        check_model(spec, source.read_config(spec.source, spec.revision))
        source.download(spec.source, spec.revision, Layout(spec).model_dir)
    path = write_properties(DJLSettings(
        model_id=args.model_id or str(Layout(spec).model_dir), precision=spec.precision,
        kv_cache_dtype=spec.kv_cache_dtype, tensor_parallel=spec.tensor_parallel,
        pipeline_parallel=spec.pipeline_parallel, max_batch_size=limits.max_batch_size,
        max_input_len=limits.max_input_len, max_seq_len=limits.max_seq_len,
        max_num_tokens=limits.max_num_tokens), Path(args.out))
    print(path)
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    from .smoke import smoke, smoke_openai

    if args.openai_url and not args.model:
        raise BadSpec("--model: required with --openai-url")
    deadline = time.monotonic() + args.wait
    while True:
        try:
            text = (smoke_openai(args.openai_url, args.model, max_tokens=args.max_tokens)
                    if args.openai_url else smoke(args.url, max_tokens=args.max_tokens))
            break
        except RuntimeError as error:
            if time.monotonic() >= deadline:
                raise StepFailed("smoke", str(error)) from None
            time.sleep(5)
    print(json.dumps({"ok": True, "text": text}))
    return 0


def cmd_alive(args: argparse.Namespace) -> int:
    """The liveness probe (:mod:`kiln_runtime.alive`): exit 1, with the reason on stderr, when
    the engine has made no progress and cannot answer a generation either."""
    from .smoke import smoke, smoke_openai

    spec = parse_serve_spec(os.environ.get(SERVE_SPEC_ENV))

    def generate() -> object:
        if spec.openai:
            assert spec.served_model_name is not None
            return smoke_openai(f"http://127.0.0.1:{spec.ports['openai']}/v1", spec.served_model_name,
                                max_tokens=2, timeout=GENERATION_TIMEOUT)
        return smoke(f"127.0.0.1:{spec.ports['grpc']}", max_tokens=2, timeout=GENERATION_TIMEOUT)

    # The frontend's own page where there is one: the relay on the metrics port is not in the way.
    page = f"http://127.0.0.1:{spec.ports['openai']}/metrics" if spec.openai else metrics_url(spec)
    verdict = check(page, generate, Path(args.state), stall=args.stall)
    print(f"[alive] {verdict.reason}", file=sys.stderr if not verdict.alive else sys.stdout,
          flush=True)
    return 0 if verdict.alive else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kiln-runtime", description="Kiln's in-container runtime")
    sub = top.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or reuse) an engine into the cache")
    build.add_argument("--spec", help="build spec JSON file (default: $KILN_BUILD_SPEC)")
    build.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    build.add_argument("--model-config", help="with --dry-run: the model's config.json, instead "
                                              "of fetching it")
    build.set_defaults(func=cmd_build)
    download = sub.add_parser("download", help="fetch a model (hf://, s3://, or a path)")
    download.add_argument("--source", required=True)
    download.add_argument("--revision", default="main")
    download.add_argument("--out", required=True)
    download.set_defaults(func=cmd_download)
    calibration = sub.add_parser("calibration-set", help="copy and check a calibration set "
                                 "(s3:// or a path) for quantize.py --calib_dataset")
    calibration.add_argument("--source", required=True)
    calibration.add_argument("--out", required=True)
    calibration.set_defaults(func=cmd_calibration_set)
    verify = sub.add_parser("verify", help="check an engine directory")
    verify.add_argument("--engine-dir", required=True)
    verify.add_argument("--world-size", type=int, required=True)
    verify.set_defaults(func=cmd_verify)
    mapping = sub.add_parser("set-gpus-per-node",
                             help="state the GPUs per node in a checkpoint's mapping")
    mapping.add_argument("--checkpoint-dir", required=True)
    mapping.add_argument("--gpus-per-node", type=int, required=True)
    mapping.set_defaults(func=cmd_set_gpus_per_node)
    publish = sub.add_parser("publish", help="move a staged engine into the cache")
    publish.add_argument("--staging", required=True)
    publish.add_argument("--cache", required=True)
    publish.add_argument("--key", required=True)
    publish.set_defaults(func=cmd_publish)
    delete = sub.add_parser("delete-entry", help="remove one engine's entry from the cache")
    delete.add_argument("--cache-root", required=True, help="the cache directory, or s3://bucket/prefix")
    delete.add_argument("--key", required=True, help="the engine key (64 hex digits)")
    delete.set_defaults(func=cmd_delete_entry)
    repo = sub.add_parser("triton-repo", help="write the Triton model repository for an engine")
    repo.add_argument("--engine-dir", required=True)
    repo.add_argument("--out", required=True)
    repo.add_argument("--templates", help="inflight_batcher_llm templates (default: the image's)")
    repo.add_argument("--tokenizer-dir", help="default: <engine-dir>/../tokenizer")
    repo.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.9)
    repo.add_argument("--instances", type=int, default=4)
    repo.add_argument("--no-streaming", action="store_true")
    repo.set_defaults(func=cmd_triton_repo)
    serve = sub.add_parser("serve", help="run tritonserver for $KILN_SERVE_SPEC")
    serve.add_argument("--model-repo", default="/tmp/kiln/model-repo")
    serve.add_argument("--templates")
    serve.add_argument("--role", choices=("single", "leader", "worker"), default="single",
                       help="one node, or the leader/a worker of a LeaderWorkerSet group")
    serve.add_argument("--leader-address", help="default: $LWS_LEADER_ADDRESS")
    serve.add_argument("--group-size", type=int, help="pods in the group (default: $LWS_GROUP_SIZE)")
    serve.add_argument("--wait-timeout", type=float, default=900.0,
                       help="seconds the leader waits for its workers")
    serve.add_argument("--dry-run", action="store_true", help="print the command line and exit")
    serve.set_defaults(func=cmd_serve)
    rsh = sub.add_parser("rsh", help="mpirun's remote launcher inside a LeaderWorkerSet group")
    rsh.add_argument("host")
    rsh.add_argument("command", nargs=argparse.REMAINDER)
    rsh.set_defaults(func=cmd_rsh)
    djl = sub.add_parser("djl-properties", help="serving.properties for DJL Serving")
    djl.add_argument("--spec", help="build spec JSON file (default: $KILN_BUILD_SPEC)")
    djl.add_argument("--model-id", help="default: the downloaded model in the work dir")
    djl.add_argument("--download", action="store_true", help="fetch the model into the work dir first")
    djl.add_argument("--out", required=True)
    djl.set_defaults(func=cmd_djl_properties)
    smoke = sub.add_parser("smoke", help="one short generation through Triton (gRPC) or the "
                                          "OpenAI endpoint")
    smoke.add_argument("--url", default="localhost:8001")
    smoke.add_argument("--openai-url", help="OpenAI base URL, e.g. http://localhost:9000/v1")
    smoke.add_argument("--model", help="with --openai-url: the served model name")
    smoke.add_argument("--max-tokens", type=int, default=8)
    smoke.add_argument("--wait", type=float, default=0.0, help="keep trying for this long")
    smoke.set_defaults(func=cmd_smoke)
    alive = sub.add_parser("alive", help="liveness: the engine iterates, or answers a generation")
    alive.add_argument("--state", default=STATE_FILE)
    alive.add_argument("--stall", type=float, default=STALL_SECONDS,
                       help="seconds without an iteration before a generation is tried")
    alive.set_defaults(func=cmd_alive)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BadSpec as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # one line, never a traceback
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
