"""The LLMService resource: one manifest that names a model, a precision and a GPU count.

Every field's docstring becomes its CRD description. Cross-field rules live twice, on
purpose: as CEL ``x-kubernetes-validations`` (enforced by the API server) and as pydantic
validators here (so ``kiln render``, ``kiln plan`` and the operator give the same message).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .common import AutoscalingMode, KilnModel, KVCacheDtype, Percent, Precision, ServerKind
from .limits import MAX_WINDOW_SECONDS, MAX_WORKER_PODS, extended_resource_problem

__all__ = [
    "MODEL_SOURCE_PATTERN",
    "SecretRef",
    "CREDENTIAL_KEYS",
    "CALIBRATION_SOURCE_PATTERN",
    "CALIBRATED_PRECISIONS",
    "CalibrationSpec",
    "ModelSpec",
    "GPUSpec",
    "ParallelismSpec",
    "RuntimeSpec",
    "EngineLimits",
    "EngineCacheSpec",
    "AutoscalingSpec",
    "NetworkPolicySpec",
    "NetworkSpec",
    "GatewaySpec",
    "SERVED_MODEL_NAME_PATTERN",
    "GATEWAY_REF_PATTERN",
    "GATEWAY_REF_MAX",
    "LLMServiceSpec",
    "Condition",
    "PlanStatus",
    "EngineRef",
    "EndpointsStatus",
    "ScaleFromZeroStatus",
    "GatewayClaim",
    "LLMServiceStatus",
    "Auto",
    "DEFAULT_MAX_INPUT_LEN",
]

DEFAULT_MAX_INPUT_LEN = 4096

# hf://org/name | s3://bucket/prefix | pvc://claim/path — no "..", no credentials, no spaces.
MODEL_SOURCE_PATTERN = (
    r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
    r"|s3://[a-z0-9][a-z0-9.-]{1,62}(/[A-Za-z0-9._-]+)*/?"
    r"|pvc://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(/[A-Za-z0-9._-]+)*/?)$"
)
# s3://bucket/prefix | pvc://claim/path: a calibration set is read from the cluster's own
# storage, never from the Hub (the offline case it exists for).
CALIBRATION_SOURCE_PATTERN = (
    r"^(s3://[a-z0-9][a-z0-9.-]{1,62}(/[A-Za-z0-9._-]+)*/?"
    r"|pvc://[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(/[A-Za-z0-9._-]+)*/?)$"
)
# The precisions quantize.py builds, each after a calibration pass
# (kiln_runtime.support.calibrates; a unit test keeps the two in step).
CALIBRATED_PRECISIONS = ("fp8", "int8-sq", "int4-awq", "w4a8-awq", "nvfp4")
_DOT_SEGMENT = re.compile(r"(^|/)\.{1,2}(/|$)")
_HF_PAGE = re.compile(r"^https?://(www\.)?(huggingface\.co|hf\.co)/(?P<org>[^/\s]+)/(?P<name>[^/?#\s]+)")
# The OpenAI API's model id, which is also a Triton model directory: no "/", no spaces.
SERVED_MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
# namespace/name of a Gateway (a DNS label of at most 63 characters, a DNS subdomain of at
# most 253: the Gateway API's Namespace and ObjectName), and its longest.
GATEWAY_REF_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
GATEWAY_REF_MAX = 317

Auto = Literal["auto"]
ParallelDegree = Annotated[int, Field(ge=1, le=64)] | Auto


# The keys a credentials Secret must hold for a source, by scheme (a pvc:// source needs none).
CREDENTIAL_KEYS = {"hf": ("HF_TOKEN",), "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


class SecretRef(KilnModel):
    """A Secret in the service's namespace."""

    secret_name: str = Field(
        min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of the Secret. Keys read: HF_TOKEN for hf://, AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY for s3://.",
    )


def _without_dot_segments(source: str) -> str:
    """``source`` (``scheme://path``), refused when its path has a '.' or '..' segment (a
    pvc:// path must not climb out of its claim)."""
    if _DOT_SEGMENT.search(source.split("://", 1)[1]):
        raise ValueError(f"{source!r} must not contain '.' or '..' path segments")
    return source


class CalibrationSpec(KilnModel):
    """A calibration set of the platform team's own, for builds that calibrate."""

    source: str = Field(
        max_length=256, pattern=CALIBRATION_SOURCE_PATTERN,
        description="s3://bucket/prefix or pvc://claim/path: a directory of .jsonl, .json, "
        ".csv or .txt files, uncompressed and of one format, whose rows have a text column, as "
        "datasets.load_dataset reads a directory's train split; at most 256 MiB. quantize.py "
        "calibrates on the first 512 rows. Read with spec.model.credentials (s3://). Unset: "
        "TensorRT-LLM's default, cnn_dailymail, downloaded from the Hugging Face Hub.",
    )

    @field_validator("source")
    @classmethod
    def _no_dot_segments(cls, value: str) -> str:
        return _without_dot_segments(value)


class ModelSpec(KilnModel):
    """Where the model's weights come from."""

    source: str = Field(
        max_length=256, pattern=MODEL_SOURCE_PATTERN,
        description="hf://org/name, s3://bucket/prefix or pvc://claim/path. Immutable.",
    )
    revision: str = Field(
        default="main", min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
        description="Branch, tag or commit. Pin a commit for reproducible engines.",
    )
    credentials: SecretRef | None = Field(
        default=None, description="Secret holding the download credentials; never inline.")
    calibration: CalibrationSpec | None = Field(
        default=None,
        description="The calibration set quantize.py reads for precisions fp8, int8-sq, "
        "int4-awq, w4a8-awq and nvfp4, in place of cnn_dailymail from the Hugging Face Hub: "
        "what lets those precisions build on a cluster without egress to huggingface.co. "
        "Part of the engine's key.")

    @field_validator("source", mode="before")
    @classmethod
    def _not_a_web_address(cls, value: Any) -> Any:
        # The address a user copies from the model's page; the pattern alone would only say
        # which regular expression it fails.
        page = _HF_PAGE.match(value) if isinstance(value, str) else None
        if page:
            raise ValueError(f"{value!r} is a web page: use hf://{page['org']}/{page['name']}")
        return value

    @field_validator("source")
    @classmethod
    def _no_dot_segments(cls, value: str) -> str:
        return _without_dot_segments(value)

    @property
    def scheme(self) -> str:
        return self.source.split("://", 1)[0]

    @property
    def location(self) -> str:
        """The source without its scheme: org/name, bucket/prefix or claim/path."""
        return self.source.split("://", 1)[1].rstrip("/")


class GPUSpec(KilnModel):
    """The GPUs a replica runs on."""

    type: str = Field(
        default="H100-80GB", min_length=1, max_length=63,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$",
        description="GPU model, e.g. H100-80GB, A100-80GB, L40S, L4. Decides the engine's "
        "architecture and, with memoryGiB unset, the memory the planner assumes. A type outside "
        "Kiln's catalog is the nodes' nvidia.com/gpu.product label value, and needs memoryGiB "
        "and arch.",
    )
    arch: str | None = Field(
        default=None, pattern=r"^sm[0-9]{2,3}$",
        description="CUDA compute capability the engine is built for (e.g. sm90), for a type "
                    "outside Kiln's catalog; a catalog type knows its own.",
    )
    per_node: int = Field(default=8, ge=1, le=16, description="GPUs on each node.")
    resource_name: str = Field(
        default="nvidia.com/gpu", min_length=1, max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Extended resource that schedules GPUs; not in the kubernetes.io/ "
                    "namespace and without the requests. prefix.",
    )

    @field_validator("resource_name")
    @classmethod
    def _extended_resource(cls, value: str) -> str:
        problem = extended_resource_problem(value)
        if problem:
            raise ValueError(f"{value!r} {problem}")
        return value
    memory_gi_b: float | None = Field(
        default=None, alias="memoryGiB", ge=1, le=1024,
        description="Usable memory per GPU in GiB, overriding the catalog figure.",
    )
    node_memory_gi_b: float = Field(
        default=1024, alias="nodeMemoryGiB", gt=0, le=65536,
        description="Host memory of one GPU node that the engine build may use, in GiB. The "
        "build Job requests what the model needs (quantize.py calibrates the whole 16-bit "
        "model, spilling past the node's GPUs into host memory); the planner refuses a build "
        "that needs more than this.",
    )


class ParallelismSpec(KilnModel):
    """How a replica's GPUs split the model; tensor x pipeline == gpus."""

    tensor: ParallelDegree = Field(default="auto", description="Tensor-parallel degree or auto.")
    pipeline: ParallelDegree = Field(default="auto", description="Pipeline-parallel degree or auto.")


class RuntimeSpec(KilnModel):
    """The inference server."""

    server: ServerKind = Field(default=ServerKind.TRITON, description="triton or djl.")
    image: str | None = Field(
        default=None, max_length=512, pattern=r"^[^\s]+$",
        description="Override of the serving image; it must hold the same TensorRT-LLM version.",
    )


class EngineLimits(KilnModel):
    """Shape limits baked into the engine, plus the KV-cache memory fraction."""

    max_batch_size: int = Field(default=256, ge=1, le=4096, description="trtllm-build --max_batch_size.")
    # No schema default: the API server would apply it before the rule maxInputLen < maxSeqLen,
    # refusing a lone `maxSeqLen: 2048`. _default_input_len fills it in from maxSeqLen.
    max_input_len: int = Field(  # type: ignore[assignment]
        default=None, ge=1, le=1048576,
        description=f"trtllm-build --max_input_len. Default: {DEFAULT_MAX_INPUT_LEN}, or "
                    "maxSeqLen - 1 when maxSeqLen is smaller.")
    max_seq_len: int = Field(default=8192, ge=2, le=1048576,
                             description="trtllm-build --max_seq_len (input + output).")
    max_num_tokens: int = Field(default=8192, ge=1, le=1048576, description="trtllm-build --max_num_tokens.")
    tokens_per_block: int = Field(default=32, ge=8, le=256, description="KV-cache block size in tokens.")
    kv_cache_free_gpu_mem_fraction: float = Field(
        default=0.9, ge=0.01, lt=1,
        description="Share of the memory left after weights and buffers given to the KV cache.",
    )
    weight_streaming: bool | None = Field(
        default=None,
        description="Build with trtllm-build --weight_streaming and keep only the share of the "
                    "weights the planner computes on the GPU (Triton gpu_weights_percent); the rest "
                    "streams from host memory every step. For models that do not fit otherwise: "
                    "decode throughput drops sharply.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_input_len(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("maxInputLen", data.get("max_input_len")) is None:
            seq = data.get("maxSeqLen", data.get("max_seq_len", 8192))
            if isinstance(seq, int) and not isinstance(seq, bool):
                data = {**data, "maxInputLen": max(1, min(DEFAULT_MAX_INPUT_LEN, seq - 1))}
        return data

    @model_validator(mode="after")
    def _input_fits_sequence(self) -> EngineLimits:
        if self.max_input_len >= self.max_seq_len:
            raise ValueError(
                f"maxInputLen: {self.max_input_len} must be smaller than maxSeqLen={self.max_seq_len}")
        if self.tokens_per_block & (self.tokens_per_block - 1):
            raise ValueError(f"tokensPerBlock: {self.tokens_per_block} must be a power of two")
        return self


class EngineCacheSpec(KilnModel):
    """Where built engines are kept, keyed by content."""

    claim_name: str = Field(
        default="kiln-engine-cache", min_length=1, max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="ReadWriteMany PersistentVolumeClaim in the service's namespace.",
    )


class AutoscalingSpec(KilnModel):
    """Replica scaling on KV-cache pressure."""

    mode: AutoscalingMode = Field(default=AutoscalingMode.NONE,
                                  description="none (use spec.replicas), builtin, keda, hpa, or "
                                              "keda-http (KEDA's HTTP add-on holds requests and "
                                              "wakes the service from zero).")
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=1, ge=1, le=1000, description="Most replicas.")
    target_kv_cache_utilization: float = Field(
        default=0.75, alias="targetKVCacheUtilization", ge=0.01, le=1,
        description="KV-cache block utilisation to hold replicas at.")
    scale_down_stabilization_seconds: int = Field(
        default=300, ge=0, le=86400,
        description=f"Quiet time before replicas are removed; at most {MAX_WINDOW_SECONDS} with "
                    "keda and hpa (an HorizontalPodAutoscaler's limit). With keda-http, the "
                    "quiet time before scaling to zero (the add-on's scaledownPeriod); between "
                    "one replica and more, the HorizontalPodAutoscaler's default 300 s.")
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090", max_length=512,
        # A base URL only: no credentials (@), query (?) or fragment (#), so that Kiln's own
        # path and query are the request's.
        pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:/-]*)?$",
        description="Base URL of the Prometheus that scrapes the serving pods (keda mode; "
                    "builtin mode with metricsSource: prometheus): scheme, host, optional port "
                    "and path prefix, without query, fragment or credentials. The platform "
                    "team may restrict it to a list (chart value prometheus.allowedUrls).")
    metrics_source: Literal["pods", "prometheus"] = Field(
        default="pods",
        description="builtin mode: scrape the serving pods' /metrics (port 8002), or query "
                    "prometheusUrl for the same series as the chart's servingPodMonitor labels "
                    "them (namespace, pod, llmservice).")
    ttft_p99_milliseconds: int | None = Field(
        default=None, alias="ttftP99Milliseconds", ge=100, le=600000,
        description="builtin mode: the service's time-to-first-token objective, 99 % of first "
                    "responses within this many milliseconds, read from Triton's "
                    "nv_inference_first_response_histogram_ms (default buckets 100, 500, 2000 "
                    "and 5000 ms; a value between two is read at the lower). While it is "
                    "missed the autoscaler corrects its demand upwards, up to twice. The first "
                    "response is the first token only for streamed requests: set it where "
                    "clients stream.")
    initial_burst_headroom: float | None = Field(
        default=None, ge=0, le=1000,
        description="builtin mode: spare replicas held for a burst the service has not yet "
                    "shown, shrinking to none over its first two hours of recorded traffic "
                    "and retired once the service shows a rise of as many replicas' worth "
                    "within a cold start (its own rises then size the spare). "
                    "Unset: the autoscaler's default, 2 (chosen on its benchmark's training "
                    "traces, services of three to five replicas at peak). 0 for a service "
                    "known to have no bursts; more for a large one whose first burst may add "
                    "more than two replicas' worth of load within a cold start.")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas == 0 and self.mode not in WAKING_MODES:
            raise ValueError(SCALE_FROM_ZERO_REFUSED.format(mode=str(self.mode)))
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas: {self.min_replicas} must not exceed maxReplicas={self.max_replicas}")
        window = self.scale_down_stabilization_seconds
        if self.mode in HPA_BACKED_MODES and window > MAX_WINDOW_SECONDS:
            raise ValueError(
                f"scaleDownStabilizationSeconds: {window} is more than {MAX_WINDOW_SECONDS}, the "
                f"longest window an HorizontalPodAutoscaler accepts (mode {self.mode})")
        return self


# builtin, keda and hpa scale on the serving pods' own metrics: with no pod left there is no
# metric, and no component holds a request while a replica starts, so nothing would ever scale
# back up. keda-http counts requests at KEDA's HTTP add-on interceptor, which holds them while
# the first replica starts; none parks the service at spec.replicas.
WAKING_MODES = (AutoscalingMode.NONE, AutoscalingMode.KEDA_HTTP)
# Modes whose scaling ends in an HorizontalPodAutoscaler (KEDA makes one per ScaledObject).
# The modes whose scale-down window is an HorizontalPodAutoscaler's (keda-http's is KEDA's
# cooldown before zero: the add-on sets no HPA behaviour).
HPA_BACKED_MODES = (AutoscalingMode.KEDA, AutoscalingMode.HPA)
SCALE_FROM_ZERO_REFUSED = (
    "minReplicas: 0 would never wake in mode {mode}: the autoscaler reads the serving pods' "
    "KV-cache metrics, and with no pod left nothing holds a request or measures demand while "
    "a replica starts. Use autoscaling.mode: keda-http, which wakes on a request (KEDA's HTTP "
    "add-on holds it while a replica starts), or minReplicas >= 1")

NamespaceName = Annotated[str, Field(min_length=1, max_length=63,
                                     pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


# An NCCL value names no path: NCCL loads the library a ``*_PLUGIN`` setting names and reads
# or writes the file a ``*_FILE`` one names (docs.nvidia.com/deeplearning/nccl/user-guide/
# docs/env.html), and a path could name a file of the model's repository in the engine cache,
# run in the leader beside the token that may exec into its workers. A bare plugin name is
# looked up on the image's library path (``libnccl-net-<name>.so``).
class EnvVar(KilnModel):
    """One NCCL setting."""

    name: str = Field(min_length=6, max_length=64, pattern=r"^NCCL_[A-Z0-9_]+$",
                      description="An NCCL_* variable.")
    value: str = Field(max_length=256, pattern=r"^[A-Za-z0-9_.,:=^+-]*$",
                       description="Its value (no spaces, shell characters or paths: no '/').")


class NetworkPolicySpec(KilnModel):
    """Who may reach the serving pods: a NetworkPolicy on ingress (egress is left open: the
    pods fetch nothing at run time). Pods of the service's own namespace may call the
    inference ports; the Kiln operator (pods labelled kiln.dev/operator=true, in any
    namespace) may scrape the metrics port; the ranks of one multi-node replica reach each
    other on every port. Enforced only where the cluster's network plugin enforces
    NetworkPolicy."""

    enabled: bool = Field(default=False, description="Render and apply the NetworkPolicy.")
    allowed_namespaces: list[NamespaceName] = Field(
        default_factory=list, max_length=64,
        description="Other namespaces whose pods may call the inference ports (HTTP, gRPC, "
                    "OpenAI); the namespace of spec.gateway and, with keda-http, keda are "
                    "admitted without being listed.")
    metrics_namespaces: list[NamespaceName] = Field(
        default_factory=list, max_length=64,
        description="Namespaces whose pods may scrape the metrics port, e.g. monitoring.")


class NetworkSpec(KilnModel):
    """The fabric between the nodes of a multi-node replica. Off by default: NCCL then runs
    over TCP sockets and pods keep the restricted security profile. On, every pod of the
    group requests the RDMA device resource, gains the IPC_LOCK capability (NCCL and the
    verbs library pin their buffers) and gets the NCCL settings below. IPC_LOCK takes the
    pods out of Pod Security "restricted" (it allows only NET_BIND_SERVICE) and "baseline"
    (only the container runtime's default set): label the namespace
    pod-security.kubernetes.io/enforce=privileged, or grant it by policy. The ranks run as
    uid 1000, and Kubernetes
    puts an added capability only in a non-root process's bounding set
    (kubernetes/kubernetes#56374), so what NCCL can pin is the locked-memory limit the
    nodes' container runtime gives containers: make it unlimited there."""

    rdma_resource: str | None = Field(
        default=None, min_length=1, max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Extended resource of the RDMA devices, e.g. rdma/ib (the RDMA shared "
        "device plugin), nvidia.com/hostdev or vpc.amazonaws.com/efa.")
    rdma_count: int = Field(default=1, ge=1, le=32,
                            description="RDMA devices each pod requests.")
    nccl_env: list[EnvVar] = Field(
        default_factory=list, max_length=32,
        description="NCCL_* settings for every rank, e.g. NCCL_IB_HCA=mlx5 or "
        "NCCL_SOCKET_IFNAME=eth0.")

    @property
    def enabled(self) -> bool:
        return self.rdma_resource is not None


class GatewaySpec(KilnModel):
    """Expose the OpenAI-compatible API through a Gateway the platform runs: an HTTPRoute
    attached to it sends requests for this service's model (the X-Gateway-Model-Name header
    the Inference Extension's body-based router sets from the request's "model") to an
    InferencePool of the serving pods, whose endpoint picker sends each request to the
    replica with the most free KV cache, the shortest queue and the longest cached prefix."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                      description="Name of the Gateway.")
    namespace: NamespaceName | None = Field(
        default=None, description="Namespace of the Gateway; default: the service's. Its "
                                  "listener must allow routes from this namespace.")


class LLMServiceSpec(KilnModel):
    """Serve this model, at this precision, on this many GPUs."""

    model: ModelSpec
    precision: Precision = Field(default=Precision.BF16, description="Weight precision.")
    kv_cache_dtype: KVCacheDtype = Field(default=KVCacheDtype.AUTO, description="KV-cache element type.")
    gpus: int = Field(default=1, ge=1, le=512, description="GPUs per replica.")
    gpu: GPUSpec = Field(default_factory=GPUSpec)
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    engine: EngineLimits = Field(default_factory=EngineLimits)
    engine_cache: EngineCacheSpec = Field(default_factory=EngineCacheSpec)
    replicas: int = Field(default=1, ge=0, le=1000,
                          description="Replicas when autoscaling.mode is none; the /scale target.")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    served_model_name: str | None = Field(
        default=None, pattern=SERVED_MODEL_NAME_PATTERN,
        description="The model name clients send to the OpenAI-compatible endpoint (the "
                    "\"model\" field of /v1/chat/completions); default: the LLMService's name. "
                    "Letters, digits, '.', '_' and '-', at most 63 characters, no '/'.")
    gateway: GatewaySpec | None = Field(
        default=None, description="Route the OpenAI-compatible API through this Gateway "
                                  "(HTTPRoute, InferencePool and its endpoint picker).")

    @model_validator(mode="after")
    def _layout(self) -> LLMServiceSpec:
        tp, pp = self.parallelism.tensor, self.parallelism.pipeline
        if isinstance(tp, int) and isinstance(pp, int) and tp * pp != self.gpus:
            raise ValueError(
                f"parallelism: tensor={tp} x pipeline={pp} = {tp * pp} must equal gpus={self.gpus}")
        for name, degree in (("tensor", tp), ("pipeline", pp)):
            if isinstance(degree, int) and self.gpus % degree:
                raise ValueError(f"parallelism.{name}: {degree} does not divide gpus={self.gpus}")
        if self.gpus > self.gpu.per_node and self.gpus % self.gpu.per_node:
            raise ValueError(
                f"gpus: {self.gpus} spans nodes, so it must be a multiple of gpu.perNode="
                f"{self.gpu.per_node}")
        if self.gateway is not None and self.runtime.server == ServerKind.DJL:
            raise ValueError("gateway: needs runtime.server: triton (Triton's OpenAI-compatible "
                             "frontend); Kiln exposes no OpenAI endpoint for DJL Serving, whose "
                             "chat schema streams JSON lines, not the server-sent events "
                             "OpenAI clients read")
        if self.model.calibration is not None:
            if self.runtime.server == ServerKind.DJL:
                raise ValueError("model.calibration: needs runtime.server: triton (DJL Serving "
                                 "builds with its own partition script, which takes no "
                                 "calibration set from Kiln)")
            source = self.model.calibration.source
            if source.split("/")[2:3] == [self.engine_cache.claim_name] and source.startswith("pvc://"):
                raise ValueError("model.calibration: names the engine cache's claim "
                                 f"({self.engine_cache.claim_name}), where other builds' scratch "
                                 "lives; put the set on a claim of its own")
            if self.precision not in CALIBRATED_PRECISIONS:
                raise ValueError(
                    f"model.calibration: precision {self.precision} is not calibrated by "
                    f"quantize.py; a calibration set applies to {', '.join(CALIBRATED_PRECISIONS)}")
        if self.autoscaling.mode == AutoscalingMode.KEDA_HTTP:
            if self.runtime.server == ServerKind.DJL:
                raise ValueError("autoscaling.mode: keda-http needs runtime.server: triton (it "
                                 "routes the OpenAI-compatible endpoint, which DJL Serving "
                                 "does not serve)")
            if self.gateway is not None:
                raise ValueError("gateway: cannot be combined with autoscaling.mode: keda-http "
                                 "(the InferencePool sends requests straight to the pods, past "
                                 "the interceptor that holds them while a replica starts)")
        if self.gpus > self.gpu.per_node and self.runtime.server == ServerKind.DJL:
            raise ValueError(
                f"runtime.server: djl serves one node per replica; gpus: {self.gpus} spans nodes "
                f"(gpu.perNode={self.gpu.per_node}), which needs server: triton")
        if self.gpus > self.gpu.per_node:
            groups = max(self.replicas, self.autoscaling.max_replicas)
            workers = groups * (self.gpus // self.gpu.per_node - 1)
            if workers > MAX_WORKER_PODS:
                field = "replicas" if self.replicas >= self.autoscaling.max_replicas \
                    else "autoscaling.maxReplicas"
                raise ValueError(
                    f"{field}: {groups} replicas of {self.gpus // self.gpu.per_node} nodes make "
                    f"{workers} worker pods, more than {MAX_WORKER_PODS}")
        return self


class Condition(KilnModel):
    """A kstatus condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class PlanStatus(KilnModel):
    """What the planner predicted for one replica."""

    fits: bool | None = None
    tensor_parallel: int
    pipeline_parallel: int
    weight_bytes_per_gpu: int | None = None
    kv_bytes_per_token_per_gpu: int | None = None
    kv_cache_tokens: int | None = None
    max_concurrent_sequences: int | None = None
    gpu_weights_percent: float | None = Field(
        default=None, ge=0, le=1, description="With engine.weightStreaming: share of weights on the GPU.")
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] | None = None
    observed_kv_cache_tokens: int | None = Field(
        default=None, alias="observedKVCacheTokens",
        description="KV-cache tokens the running engine allocated (Triton's KV block metrics).")
    kv_cache_tokens_error: float | None = Field(
        default=None, alias="kvCacheTokensError",
        description="(predicted - observed) / observed.")


class EngineRef(KilnModel):
    """The engine a service serves, or is waiting for."""

    name: str
    key: str
    storage_uri: str
    build_job: str | None = None


# One object in a service's inventory: ``Kind/name`` (a Kubernetes kind, a DNS name).
ChildEntry = Annotated[str, Field(max_length=320, pattern=r"^[A-Za-z]{1,63}/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
# The most objects one service has (a gateway service: 11), with room to grow.
MAX_CHILDREN = 32


# One recorded demand: whole seconds before ``savedAt``, a colon, replicas to two decimals.
_RECORD_ENTRY = r"[0-9]{1,6}:[0-9]{1,5}(\.[0-9]{1,2})?"
RECORD_PATTERN = rf"^({_RECORD_ENTRY}( {_RECORD_ENTRY})*)?$"
# An hour of 15 s decisions is 240 entries of at most 16 characters.
RECORD_MAX_CHARS = 8192


class AutoscalerRecord(KilnModel):
    """What the builtin autoscaler's law has learned of the service, so that an operator
    restart does not forget it (its demand over the last hour, for the burst headroom)."""

    saved_at: str = Field(description="When the operator wrote this record.")
    started_at: str = Field(description="When the record began, less any time no operator "
                                        "recorded: the prior burst headroom shrinks as the "
                                        "time on record grows to two hours.")
    demand: str = Field(
        default="", max_length=RECORD_MAX_CHARS, pattern=RECORD_PATTERN,
        description="The demand at each decision of the last hour, in replicas: "
                    "'SECONDS_BEFORE_SAVED_AT:REPLICAS', space-separated.")
    correction: float = Field(
        default=1.0, ge=1.0, le=100.0,
        description="The demand's correction from the TTFT objective (1: none).")
    corrected_at: str | None = Field(default=None, description="When the correction last changed.")


class AutoscalingStatus(KilnModel):
    """The builtin autoscaler's last decision."""

    last_decision: str = Field(description="What the control law decided and why.")
    decision_time: str
    last_scale_time: str | None = None
    record: AutoscalerRecord | None = Field(
        default=None, description="The control law's record, read back after an operator "
                                  "restart; written when it has moved a tenth of a replica from "
                                  "this one, at most once a minute.")


class EndpointsStatus(KilnModel):
    """Where clients inside the cluster reach the service."""

    openai: str | None = Field(
        default=None, description="Base URL of the OpenAI-compatible API (ends in /v1).")


class ScaleFromZeroStatus(KilnModel):
    """autoscaling.mode keda-http: how a service at zero replicas wakes."""

    url: str = Field(description="The URL whose requests wake the service (KEDA's HTTP add-on "
                                 "interceptor holds them while a replica starts).")
    cold_start_seconds: int = Field(
        ge=0, description="Expected wait of a request that wakes the service, from the plan "
                          "(pod start plus reading the engine).")
    hold_seconds: int = Field(ge=0, description="How long the interceptor holds a request "
                                                "for a ready replica (timeouts.conditionWait).")


class GatewayClaim(KilnModel):
    """A served model name on a Gateway: one the service's HTTPRoute routes (since the
    route's creation, as the Gateway ranks routes), or the one its spec asks for, not yet
    routed. One name on one Gateway routes to one service: the one whose route has routed it
    longest; another that asks for it stalls (ModelNameInUse) until it is free."""

    gateway: str = Field(max_length=GATEWAY_REF_MAX, pattern=GATEWAY_REF_PATTERN,
                         description="namespace/name of the Gateway.")
    model: str = Field(pattern=SERVED_MODEL_NAME_PATTERN, description="The served model name.")
    routed_since: str | None = Field(
        default=None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
        description="The creation time of the service's HTTPRoute that routes this name; unset while "
                    "its spec asks for the name and no route of it routes it yet.")


# The name the spec asks for, and the one the service's HTTPRoute still routes until a rename
# is applied.
MAX_GATEWAY_CLAIMS = 2


class LLMServiceStatus(KilnModel):
    """Observed state, kstatus style."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    replicas: int | None = None
    ready_replicas: int | None = None
    selector: str | None = None
    endpoint: str | None = None
    endpoints: EndpointsStatus | None = None
    scale_from_zero: ScaleFromZeroStatus | None = None
    plan: PlanStatus | None = None
    engine: EngineRef | None = None
    tp_pp: str | None = Field(default=None, alias="tpPp", description="TPxPP, for printing.")
    kv_cache_utilization: Percent | None = Field(
        default=None, alias="kvCacheUtilization", description="Mean KV-cache use, for printing.")
    desired_replicas: int | None = Field(
        default=None, description="Replicas the builtin autoscaler wants (the workload follows).")
    autoscaling: AutoscalingStatus | None = None
    gateway_claims: list[GatewayClaim] | None = Field(
        default=None, max_length=MAX_GATEWAY_CLAIMS,
        description="spec.gateway: the model names this service's HTTPRoute routes on its Gateway, "
                    "and the one its spec asks for.")
    children: list[ChildEntry] | None = Field(
        default=None, max_length=MAX_CHILDREN,
        description="The objects Kiln applied for the service, or is about to (what the spec asks for "
                    "is named before it is applied), Kind/name in its namespace: one the spec no longer "
                    "asks for is deleted.")


