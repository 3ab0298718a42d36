"""``kiln-runtime serve``: write the model repository, start tritonserver, watch its log.

One node: a single server for TP×PP = 1, else ``mpirun`` with one rank per GPU as
``launch_triton_server.py`` does (TensorRT-LLM 1.2.1): rank 0 serves HTTP/gRPC/metrics,
the other ranks load only ``tensorrt_llm`` in explicit mode with their endpoints off (in
leader mode they never return from model init). SIGTERM/SIGINT are forwarded to the child
and its exit code becomes ours. The startup log is scanned for the KV-cache capacity the
engine really allocated; it is logged as one JSON line and written to a file the operator
and the metrics sidecar can read.

With a served model name, rank 0 is Triton's OpenAI-compatible frontend (Triton in process,
its KServe HTTP/gRPC endpoints kept; see :mod:`kiln_runtime.openai_frontend`) instead of the
tritonserver binary, and its metrics page is relayed to the metrics port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cache, toolchain
from .drain import drain
from .errors import BadSpec
from .group import READY_FILE, Group
from .kvlog import KVLogParser
from .openai_frontend import SERVED_MODEL_NAME_PATTERN, MetricsRelay, frontend_argv
from .triton_repo import RepoSettings, TRITON_MODELS, write_model_repo

__all__ = ["ServeSpec", "parse_serve_spec", "server_argv", "run_server", "SERVE_SPEC_ENV",
           "KV_CAPACITY_FILE"]

SERVE_SPEC_ENV = "KILN_SERVE_SPEC"
KV_CAPACITY_FILE = "/tmp/kiln/kv-capacity.json"


@dataclass(frozen=True)
class ServeSpec:
    engine_root: Path  # <cache>/<key>: engine/, tokenizer/, manifest.json
    tensor_parallel: int
    pipeline_parallel: int
    kv_cache_free_gpu_mem_fraction: float
    decoupled: bool
    ports: dict[str, int]
    gpu_weights_percent: float = 1.0
    gpus_per_node: int = 0  # MPI slots per pod in a multi-node group (0: one node)
    served_model_name: str | None = None  # set: rank 0 runs the OpenAI frontend

    @property
    def openai(self) -> bool:
        return self.served_model_name is not None

    @property
    def world_size(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel


def parse_serve_spec(text: str | None) -> ServeSpec:
    if not text:
        raise BadSpec(f"no serve spec: set {SERVE_SPEC_ENV}")
    try:
        raw = json.loads(text)
        spec = ServeSpec(
            engine_root=Path(raw["engineDir"]),
            tensor_parallel=int(raw["tensorParallel"]),
            pipeline_parallel=int(raw["pipelineParallel"]),
            kv_cache_free_gpu_mem_fraction=float(raw["kvCacheFreeGpuMemFraction"]),
            decoupled=bool(raw.get("decoupled", True)),
            ports={k: int(v) for k, v in raw.get("ports", {"http": 8000, "grpc": 8001,
                                                             "metrics": 8002}).items()},
            gpu_weights_percent=float(raw.get("gpuWeightsPercent", 1.0)),
            gpus_per_node=int(raw.get("gpusPerNode", 0)),
            served_model_name=raw.get("servedModelName"),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise BadSpec(f"{SERVE_SPEC_ENV}: {type(error).__name__}: {' '.join(str(error).split())[:160]}") from None
    except RecursionError:
        raise BadSpec(f"{SERVE_SPEC_ENV}: nested too deep to be read") from None
    # Whole numbers and booleans as JSON writes them: int() would take 1.9 as 1, bool() "false" as true.
    if not isinstance(raw.get("decoupled", True), bool):
        raise BadSpec("decoupled: must be true or false")
    for name in ("tensorParallel", "pipelineParallel", "gpusPerNode"):
        if name in raw and (isinstance(raw[name], bool) or not isinstance(raw[name], int)):
            raise BadSpec(f"{name}: must be a whole number (got {str(raw[name])[:20]})")
    if not 0 < spec.kv_cache_free_gpu_mem_fraction < 1:
        raise BadSpec("kvCacheFreeGpuMemFraction: must be between 0 and 1 (exclusive)")
    if not 0 <= spec.gpu_weights_percent <= 1:  # NaN too
        raise BadSpec(f"gpuWeightsPercent: must be between 0 and 1 (got {spec.gpu_weights_percent})")
    for name, degree in (("tensorParallel", spec.tensor_parallel), ("pipelineParallel", spec.pipeline_parallel)):
        if not 1 <= degree <= 64:
            raise BadSpec(f"{name}: must be between 1 and 64 (got {degree})")
    if not 0 <= spec.gpus_per_node <= 64:
        raise BadSpec(f"gpusPerNode: must be between 0 and 64 (got {spec.gpus_per_node})")
    for name, port in spec.ports.items():
        if not 1 <= port <= 65535:
            raise BadSpec(f"ports.{str(name)[:20]}: {port} is not a port (1-65535)")
    if spec.served_model_name is not None:
        # It becomes a directory of the model repository, beside Triton's own models.
        if not isinstance(spec.served_model_name, str) or not SERVED_MODEL_NAME_PATTERN.fullmatch(
                spec.served_model_name):
            raise BadSpec(f"servedModelName: {spec.served_model_name!r} must match "
                          f"{SERVED_MODEL_NAME_PATTERN.pattern}")
        if spec.served_model_name in TRITON_MODELS:
            raise BadSpec(f"servedModelName: {spec.served_model_name!r} is the name of one of Triton's models "
                          f"in the repository ({', '.join(TRITON_MODELS)}); choose another")
        if "openai" not in spec.ports:
            raise BadSpec("ports: servedModelName needs an openai port")
    return spec


def _rank_argv(spec: ServeSpec, repo: Path, rank: int) -> list[str]:
    if rank == 0 and spec.openai:
        return frontend_argv(toolchain.python(), repo, spec.engine_root / "tokenizer", spec.ports)
    argv = [toolchain.tritonserver(), f"--model-repository={repo}",
            "--disable-auto-complete-config",
            f"--backend-config=python,shm-region-prefix-name=prefix{rank}_",
            f"--id=rank{rank}"]
    if rank == 0:
        argv += [f"--http-port={spec.ports['http']}", f"--grpc-port={spec.ports['grpc']}",
                 f"--metrics-port={spec.ports['metrics']}", "--allow-metrics=true",
                 "--metrics-interval-ms=1000",
                 # time to first token, for dashboards (decoupled/streaming models)
                 "--metrics-config=histogram_latencies=true"]
    else:
        argv += ["--allow-http=false", "--allow-grpc=false", "--allow-metrics=false",
                 "--model-control-mode=explicit", "--load-model=tensorrt_llm",
                 "--log-info=false", "--log-warning=false"]
    return argv


def server_argv(spec: ServeSpec, repo: Path, group: Group | None = None) -> list[str]:
    """The command line for one node, or for a whole multi-node ``group`` (run by its leader)."""
    if spec.world_size == 1 and group is None:
        return _rank_argv(spec, repo, 0)
    argv = [toolchain.mpirun(), "--allow-run-as-root"]
    if group is not None:
        if group.size * group.slots != spec.world_size:
            raise BadSpec(f"the group has {group.size} pods x {group.slots} GPUs, but the engine "
                          f"needs TP x PP = {spec.world_size} ranks")
        argv += ["--host", group.host_list(), "--map-by", "slot", "--bind-to", "none",
                 # Two dashes: Open MPI 5's mpirun ignores "-mca plm_rsh_agent" and starts
                 # its daemons with ssh (tests/unit/test_real_mpirun.py); 4.x takes both.
                 "--mca", "plm_rsh_agent", "kiln-runtime rsh",
                 # Every daemon from the leader: by default mpirun launches them as a tree
                 # (past routed_radix daemons a worker's daemon starts the next ones with the
                 # same launcher), and only the leader's pod holds the token that may exec.
                 # Open MPI 5 takes it as PRRTE's plm_ssh_no_tree_spawn
                 # (tests/unit/test_real_mpirun.py).
                 "--mca", "plm_rsh_no_tree_spawn", "1",
                 # The workers' ranks start under kubectl exec, which sees the container's
                 # environment but not what the image's entrypoint exported for CUDA forward
                 # compatibility (the compat libraries on LD_LIBRARY_PATH, on a node whose
                 # driver is older than the image's CUDA): they get the leader's, which its
                 # entrypoint prepared, as NVIDIA's own launchers pass it (NVIDIA/JAX-Toolbox
                 # #1590, NVIDIA/NeMo-Framework-Launcher #405).
                 "-x", "LD_LIBRARY_PATH"]
    for rank in range(spec.world_size):
        argv += ["-n", "1", *_rank_argv(spec, repo, rank), ":"]
    return argv[:-1]


def prepare(spec: ServeSpec, repo: Path, templates: Path, group: Group | None = None,
            index: int = 0) -> None:
    """``group``, ``index``: this pod is pod ``index`` of a multi-node group (0: the leader)."""
    # A worker's marker says its repository is whole: gone before it is rewritten, so that a
    # rewrite that fails half-way is not taken for one that finished.
    (repo / READY_FILE).unlink(missing_ok=True)
    engine_dir = spec.engine_root / "engine"
    # Sizes of every engine file, and the sha256 of those this pod loads, against the manifest
    # written at publish: a damaged entry is refused here, not loaded into GPUs to fail (or
    # answer wrongly) later. In a group, pod i runs ranks i*slots .. (i+1)*slots - 1
    # (server_argv: --host lists the leader then the workers, --map-by slot fills them in order).
    ranks = range(index * group.slots, (index + 1) * group.slots) if group is not None else None
    why = cache.damage(spec.engine_root, digests=True, ranks=ranks)
    if why is not None:
        raise BadSpec(f"engineDir: the cache entry {spec.engine_root} is damaged: {why}; delete it "
                      "(and its LLMEngine) so that the next build makes it again")
    # The leader mounts the launcher's token, and the repository's Python models load the
    # tokenizer with trust_remote_code (inflight_batcher_llm preprocessing/1/model.py): the
    # model's own code would run beside it, which a custom image needs multiNode.customImages for.
    if group is not None and index == 0 and (code := cache.remote_code(spec.engine_root / "tokenizer")):
        raise BadSpec(f"engineDir: {cache.leader_refuses(code)}")
    write_model_repo(templates, repo, RepoSettings(
        engine_dir=engine_dir, tokenizer_dir=spec.engine_root / "tokenizer",
        kv_cache_free_gpu_mem_fraction=spec.kv_cache_free_gpu_mem_fraction,
        decoupled=spec.decoupled, gpu_weights_percent=spec.gpu_weights_percent,
        served_model_name=spec.served_model_name))


def _tokens_per_block(spec: ServeSpec) -> int | None:
    try:
        config: dict[str, Any] = json.loads((spec.engine_root / "engine" / "config.json").read_text())
        return int(config["build_config"]["plugin_config"]["tokens_per_block"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def metrics_url(spec: ServeSpec, host: str = "127.0.0.1") -> str:
    """Rank 0's metrics page: the metrics port (the frontend's page relayed there, or
    tritonserver's own)."""
    port = spec.ports.get("metrics") or spec.ports.get("openai")
    return f"http://{host}:{port}/metrics"


def run_server(spec: ServeSpec, repo: Path, capacity_file: Path | None = None,
               group: Group | None = None) -> int:
    """Run the server in the foreground; returns its exit code."""
    capacity_file = capacity_file or Path(os.environ.get("KILN_KV_CAPACITY_FILE", KV_CAPACITY_FILE))
    argv = server_argv(spec, repo, group)
    print(f"starting: {' '.join(argv)}", file=sys.stderr, flush=True)
    relay = (MetricsRelay(spec.ports["metrics"],
                          f"http://127.0.0.1:{spec.ports['openai']}/metrics").start()
             if spec.openai and "metrics" in spec.ports else None)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1)
    # mpirun stops its ranks within seconds of a SIGTERM: a replica of several ranks passes it
    # on once the requests in flight have finished (kiln_runtime.drain).
    draining = argv[0] == toolchain.mpirun()
    stopping = threading.Event()

    def forward(signum: int, _frame: Any) -> None:
        if not (draining and signum == signal.SIGTERM):
            process.send_signal(signum)
        elif not stopping.is_set():
            stopping.set()
            threading.Thread(target=drain, daemon=True, args=(
                metrics_url(spec), lambda: process.send_signal(signal.SIGTERM))).start()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    parser = KVLogParser(_tokens_per_block(spec))
    assert process.stdout is not None
    try:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if found := parser.feed(line):
                record = {"kvCacheCapacity": found.wire(), "worldSize": spec.world_size}
                print(json.dumps(record), flush=True)
                capacity_file.parent.mkdir(parents=True, exist_ok=True)
                capacity_file.write_text(json.dumps(record))
        return process.wait()
    finally:
        process.stdout.close()
        if relay is not None:
            relay.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
