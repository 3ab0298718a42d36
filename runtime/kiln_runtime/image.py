"""The layout of the images Kiln runs in: every path, command, user and writable directory
the runtime relies on, each with the source it was checked against.

Checked two ways: ``runtime/Dockerfile`` has one ``RUN test -e`` (or ``command -v``) line per
entry, so the image build fails if NVIDIA moves something; and
``tests/unit/test_image_layout.py`` fails if the runtime names an absolute path that is
neither here nor one of the volumes Kiln mounts.

Nothing in the image is writable by the pods' uid 1000: the Triton working directory
``/opt/tritonserver`` is root-owned, and the DJL image's ``/opt/djl`` belongs to its ``djl``
user. Everything Kiln writes goes to the volumes in :data:`MOUNTS`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Entry", "TRITON", "DJL", "MOUNTS", "USER", "EXAMPLES_DIR", "TEMPLATES_DIR", "TRITONSERVER",
           "OPENAI_FRONTEND", "DJL_PARTITION_SCRIPT", "DJL_LOG_DIR", "NGC_ENTRYPOINT", "DJL_ENTRYPOINT",
           "NOT_WRITABLE", "entry_for", "covered"]

_BACKEND_DOCKERFILE = ("triton-inference-server/tensorrtllm_backend "
                       "dockerfile/Dockerfile.triton.trt_llm_backend @ 0046c234 "
                       "(WORKDIR /app; COPY .../tensorrt_llm/examples examples; "
                       "COPY .../triton_backend/all_models all_models)")
_LAUNCH_SCRIPT = ("NVIDIA/TensorRT-LLM triton_backend/scripts/launch_triton_server.py "
                  "@ 0b06796b (--tritonserver default; mpirun --allow-run-as-root)")
_SERVER_BUILD = ("triton-inference-server/server build.py @ 35dc045f (useradd triton-server, "
                 "asserted uid and gid 1000; WORKDIR /opt/tritonserver, which Docker creates "
                 "root-owned: only the copied files get --chown=1000:1000); on the Ubuntu 24.04 "
                 "images, whose base has a user ubuntu of uid 1000, the 25.03dev build.py runs "
                 "userdel ubuntu first, and useradd without -m makes no home directory")
_OPENAI_SOURCE = ("triton-inference-server/server build.py create_dockerfile_linux "
                  "(COPY build/install /opt/tritonserver; WORKDIR /opt/tritonserver; "
                  "pip3 install -r python/openai/requirements.txt) and python/openai/README.md "
                  "(cd /opt/tritonserver/python/openai; python3 openai_frontend/main.py)")
_NGC_ENTRYPOINT = ("triton-inference-server/server build.py create_dockerfile_linux: GPU images "
                   "keep their NGC base's ENTRYPOINT and add docker/entrypoint.d/ to "
                   "/opt/nvidia/entrypoint.d/ (only the CPU-only build copies "
                   "docker/cpu_only/nvidia_entrypoint.sh, 'not available in /opt/nvidia in the "
                   "base image'); nvidia_entrypoint.sh sources every entrypoint.d/*.sh, the base "
                   "image's driver checks among them, then runs exec \"$@\"")
_DJL_ENTRYPOINT = ("deepjavalibrary/djl-serving serving/docker/tensorrt-llm.Dockerfile "
                   "(COPY dockerd-entrypoint-with-cuda-compat.sh /usr/local/bin/dockerd-entrypoint.sh; "
                   "ENTRYPOINT) and serving/docker/dockerd-entrypoint-with-cuda-compat.sh (puts "
                   "/usr/local/cuda/compat on LD_LIBRARY_PATH when the node's driver is older than "
                   "the compat package, then eval \"$@\" for anything but serve, partition, train)")
_DJL_DOCKERFILE = ("deepjavalibrary/djl-serving serving/docker/tensorrt-llm.Dockerfile "
                   "@ 01a5de91, the 0.26 release's (WORKDIR /opt/djl; COPY partition "
                   "/opt/djl/partition; useradd djl; chown -R djl:djl /opt/djl); the server "
                   "itself runs the same script path in later releases "
                   "(wlm/.../LmiUtils.java, buildTrtLlmArtifacts); 0.33.0's own file not read")


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str  # "file", "dir" or "command" (found on PATH)
    source: str


EXAMPLES_DIR = "/app/examples"
TEMPLATES_DIR = "/app/all_models/inflight_batcher_llm"
TRITONSERVER = "/opt/tritonserver/bin/tritonserver"
# Triton's OpenAI-compatible frontend (kiln_runtime.openai_frontend).
OPENAI_FRONTEND = "/opt/tritonserver/python/openai/openai_frontend/main.py"
DJL_PARTITION_SCRIPT = "/opt/djl/partition/trt_llm_partition.py"
# The images' own entrypoints, through which Kiln runs every command that uses a GPU: a pod's
# `command` replaces the image's ENTRYPOINT, and these set up CUDA forward compatibility on a
# node whose driver is older than the image's CUDA.
NGC_ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"
DJL_ENTRYPOINT = "/usr/local/bin/dockerd-entrypoint.sh"
# The pods' runAsUser: the Triton image's triton-server user.
USER = (1000, _SERVER_BUILD)
# DJL Serving writes its logs under $MODEL_SERVER_HOME/logs; /opt/djl is owned by djl.
DJL_LOG_DIR = "/opt/djl/logs"

# nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 (TensorRT-LLM 1.2.1), plus kubectl.
TRITON: tuple[Entry, ...] = (
    Entry(EXAMPLES_DIR, "dir", _BACKEND_DOCKERFILE),
    Entry(f"{EXAMPLES_DIR}/quantization/quantize.py", "file", _BACKEND_DOCKERFILE),
    Entry(f"{EXAMPLES_DIR}/models/core/llama/convert_checkpoint.py", "file", _BACKEND_DOCKERFILE),
    Entry(f"{EXAMPLES_DIR}/models/core/qwen/convert_checkpoint.py", "file", _BACKEND_DOCKERFILE),
    Entry(f"{TEMPLATES_DIR}/tensorrt_llm/config.pbtxt", "file", _BACKEND_DOCKERFILE),
    Entry(TEMPLATES_DIR, "dir", _BACKEND_DOCKERFILE),
    Entry(TRITONSERVER, "file", _LAUNCH_SCRIPT),
    Entry(OPENAI_FRONTEND, "file", _OPENAI_SOURCE),
    Entry(NGC_ENTRYPOINT, "file", _NGC_ENTRYPOINT),
    Entry("trtllm-build", "command",
          "NVIDIA/TensorRT-LLM setup.py console script tensorrt_llm.commands.build:main"),
    Entry("mpirun", "command", _LAUNCH_SCRIPT),
    Entry("python3", "command", _BACKEND_DOCKERFILE),
    Entry("kubectl", "command", "runtime/Dockerfile installs it into /usr/local/bin"),
)

# deepjavalibrary/djl-serving:0.33.0-tensorrt-llm (TensorRT-LLM 0.21).
DJL: tuple[Entry, ...] = (
    Entry(DJL_PARTITION_SCRIPT, "file", _DJL_DOCKERFILE),
    Entry(DJL_ENTRYPOINT, "file", _DJL_ENTRYPOINT),
    Entry("/opt/djl", "dir", _DJL_DOCKERFILE),
)

# Directories that exist in the images but that uid 1000 cannot write: never a working
# directory, never a write target.
NOT_WRITABLE: tuple[Entry, ...] = (
    Entry("/opt/tritonserver", "dir", _SERVER_BUILD),
    Entry("/opt/djl", "dir", _DJL_DOCKERFILE),
)

# What Kiln itself mounts into its pods (render.pod / render.engine), writable unless noted;
# the kubelet's and the container runtime's own files; and the shell mpirun's launcher uses.
MOUNTS: tuple[str, ...] = (
    "/work",             # the build's scratch volume (checkpoint, downloads, timing cache)
    "/engines",          # the engine cache volume (read-only in serving pods)
    "/model-source",     # pvc:// model sources, read-only
    "/calibration-source",  # a pvc:// calibration set on a claim of its own, read-only
    "/tmp",              # emptyDir in every pod
    "/dev/shm",          # memory emptyDir for NCCL, MPI and Triton's Python backend
    DJL_LOG_DIR,         # emptyDir over the DJL image's log directory
    "/dev/termination-log",
    "/proc/self/fd",     # the kernel's: where an opened file really is (kiln_runtime.source)
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/bin/sh",
)


def entry_for(path: str) -> Entry | None:
    for entry in (*TRITON, *DJL):
        if entry.path == path:
            return entry
    return None


def covered(path: str) -> bool:
    """True if ``path`` is an image entry, lies under one, or lies under a mounted volume."""
    roots = [e.path for e in (*TRITON, *DJL, *NOT_WRITABLE) if e.kind != "command"] + list(MOUNTS)
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)
