"""Pods as NVIDIA's and DJL's images need them: the multi-node fabric (spec.network), the DJL
image's user, the leader waiting for its workers' model repositories, and a build Job sized
from the model (405B-class builds)."""

from __future__ import annotations

import json
import sys
import threading
import time

import kubernetes_validate
import pytest
import yaml

from kiln.api import parse_service_spec
from kiln.planner import catalog_config
from kiln.planner.build import FP8_ROWWISE
from kiln.render import ServiceRef, render
from kiln_runtime import build, group as group_module
from kiln_runtime.errors import StepFailed
from kiln_runtime.spec import parse_build_spec

from ..conftest import ROOT
from ..support import crd_schemas
from .test_runtime_build import _check_against_reference
from ..support.planning import planned

RDMA = yaml.safe_load((ROOT / "examples" / "llama-3.1-70b-bf16-4gpu-nodes-rdma.yaml").read_text())["spec"]
LLAMA_405B = yaml.safe_load((ROOT / "examples" / "llama-3.1-405b-fp8-multinode.yaml").read_text())["spec"]


def _render(service: dict):
    spec = parse_service_spec(service)
    result, gpu = planned(spec)
    assert result.fits, result.reasons
    return result, render(ServiceRef("svc", "llm", "uid-1"), spec, result, gpu)


def _lws_containers(rendered):
    template = rendered.workload["spec"]["leaderWorkerTemplate"]
    return [template[role]["spec"]["containers"][0] for role in ("leaderTemplate", "workerTemplate")]


def test_network_gives_every_rank_the_rdma_device_ipc_lock_and_nccl_settings():
    result, rendered = _render(RDMA)
    crd_schemas.validate(rendered.workload)
    assert not any("without spec.network" in note for note in result.notes)
    for container in _lws_containers(rendered):
        assert container["resources"]["limits"]["rdma/ib"] == "1"
        assert container["resources"]["requests"]["rdma/ib"] == "1"
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["NCCL_IB_HCA"] == "mlx5" and env["NCCL_SOCKET_IFNAME"] == "eth0"
    # the build Job and everything else keep the restricted profile
    [build_container] = rendered.build_job["spec"]["template"]["spec"]["containers"]
    assert "add" not in build_container["securityContext"]["capabilities"]


def test_without_network_the_plan_says_nccl_runs_over_tcp_and_pods_stay_restricted():
    result, rendered = _render(LLAMA_405B)
    assert any("without spec.network: NCCL runs over TCP sockets" in n for n in result.notes)
    for container in _lws_containers(rendered):
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert not [k for k in container["resources"]["limits"] if k != "nvidia.com/gpu"]


@pytest.mark.parametrize("bad, field", [
    ({"rdmaResource": "rdma ib"}, "network.rdmaResource"),
    ({"rdmaResource": "rdma/ib", "ncclEnv": [{"name": "LD_PRELOAD", "value": "x"}]},
     "network.ncclEnv.0.name"),
    ({"rdmaResource": "rdma/ib", "ncclEnv": [{"name": "NCCL_DEBUG", "value": "$(rm -rf /)"}]},
     "network.ncclEnv.0.value"),
    # NCCL loads the library a *_PLUGIN setting names, and reads or writes the file a *_FILE
    # setting names (docs.nvidia.com/deeplearning/nccl/user-guide/docs/env.html: NCCL_NET_PLUGIN,
    # NCCL_TUNER_PLUGIN, NCCL_PROFILER_PLUGIN, NCCL_CONF_FILE, NCCL_TOPO_FILE, NCCL_DEBUG_FILE):
    # a path there would run the tenant's code (a tokenizer file of the model's repository,
    # in the engine cache) in the leader, beside the token that may exec into the workers. A
    # bare name is looked up on the image's library path only.
    *[({"rdmaResource": "rdma/ib", "ncclEnv": [{"name": "NCCL_IB_HCA", "value": "mlx5"},
                                               {"name": name, "value": value}]},
       "network.ncclEnv.1.value")
      for name, value in (("NCCL_NET_PLUGIN", "/engines/k/tokenizer/tokenizer.model"),
                          ("NCCL_TUNER_PLUGIN", "/tmp/x.so"), ("NCCL_PROFILER_PLUGIN", "./x.so"),
                          ("NCCL_ENV_PLUGIN", "/engines/k/tokenizer/merges.txt"),
                          ("NCCL_CONF_FILE", "/engines/k/tokenizer/vocab.json"),
                          ("NCCL_DEBUG_FILE", "/engines/k/rank0.engine"))],
])
def test_hostile_network_settings_are_refused_naming_the_field(bad, field):
    from kiln.errors import SpecInvalid

    with pytest.raises(SpecInvalid, match=f"^spec.{field}: "):
        parse_service_spec({**RDMA, "network": bad})


def test_djl_pods_write_their_logs_to_an_emptydir_as_uid_1000():
    service = yaml.safe_load((ROOT / "examples" / "qwen2.5-7b-djl.yaml").read_text())["spec"]
    _, rendered = _render(service)
    for pod in (rendered.workload["spec"]["template"]["spec"],
                rendered.build_job["spec"]["template"]["spec"]):
        assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsNonRoot"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["djl-logs"] == {"name": "djl-logs", "emptyDir": {}}
        djl = [c for c in pod["containers"] if c["image"].startswith("deepjavalibrary/")]
        assert djl and all({"name": "djl-logs", "mountPath": "/opt/djl/logs"} in c["volumeMounts"]
                           for c in djl)
    kubernetes_validate.validate(rendered.workload, "1.33", strict=True)


def _local_kubectl(tmp_path):
    """kubectl exec, run here: the worker's /tmp is this machine's."""
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                    "argv = sys.argv[sys.argv.index('--') + 1:]\n"
                    "sys.exit(subprocess.run(argv).returncode)\n")
    fake.chmod(0o755)
    return fake


def test_the_leader_waits_until_each_worker_has_written_its_model_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "llm")
    monkeypatch.setenv("KILN_KUBECTL", str(_local_kubectl(tmp_path)))
    monkeypatch.setattr(group_module.socket, "getaddrinfo", lambda host, port: [("resolved",)])
    # Whose pods they are is test_launcher_targets.py's; here every worker is the group's.
    monkeypatch.setattr(group_module, "check_worker", lambda host, missing_ok=False: True)
    repo = tmp_path / "model-repo"
    repo.mkdir()
    group = group_module.Group("g-0.g.llm", 2, 4)
    with pytest.raises(StepFailed, match="g-0-1.g.llm"):  # reachable, but no repository yet
        group_module.wait_for_workers(group, timeout=0, poll=0.01, repo=repo)
    threading.Timer(0.3, group_module.mark_ready, args=(repo,)).start()
    started = time.monotonic()
    group_module.wait_for_workers(group, timeout=10, poll=0.05, repo=repo)
    assert time.monotonic() - started >= 0.25


def test_a_405b_fp8_build_converts_shard_by_shard_on_the_cache_volume():
    result, rendered = _render(LLAMA_405B)
    assert result.build.recipe == FP8_ROWWISE and result.build.stage_on_cache
    pod = rendered.build_job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    raw = json.loads(container["env"][0]["value"])
    assert raw["checkpointRecipe"] == FP8_ROWWISE
    assert raw["workDir"].startswith("/engines/.work/")
    assert "ephemeral-storage" not in container["resources"]["requests"]
    dry = build.dry_run(parse_build_spec(raw), catalog_config("meta-llama/Llama-3.1-405B-Instruct"))
    checkpoint = dry["steps"][1]["argv"]
    assert checkpoint[1].endswith("/models/core/llama/convert_checkpoint.py")
    assert {"--use_fp8_rowwise", "--load_by_shard", "--fp8_kv_cache"} <= set(checkpoint)
    _check_against_reference(checkpoint)
    assert dry["engineConfig"]["pretrained_config"]["quantization"]["quant_algo"] == \
        "FP8_PER_CHANNEL_PER_TOKEN"


def test_the_build_job_is_sized_from_the_model():
    _, small = _render({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "precision": "bf16"})
    requests = small.build_job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    # the converter holds the 16 GB model in host memory; download + checkpoint on the node,
    # with 2 % and a GiB for the rest (tokenizer, the Hub's metadata, the timing cache)
    assert requests["memory"] == "47Gi" and requests["ephemeral-storage"] == "32Gi"
    volumes = {v["name"]: v for v in small.build_job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["work"]["emptyDir"] == {"sizeLimit": "32Gi"}


def test_a_calibrated_build_has_scratch_for_its_calibration_set():
    """quantize.py downloads the whole cnn_dailymail train split into HF_HOME on scratch
    (quantize_by_modelopt.py, get_calib_dataloader); so does the Llama converter for an INT8 KV
    cache (convert_checkpoint.py --int8_kv_cache calibrates on ccdv/cnn_dailymail through
    LLaMAForCausalLM.quantize); with an FP8 KV cache or none it calibrates nothing."""
    from kiln.api import Precision
    from kiln.planner.build import CALIBRATION_DATA_BYTES, SCRATCH_MARGIN
    from kiln.planner.memory import weight_bytes_per_gpu

    from kiln.planner import model_config

    model, _ = model_config("hf://meta-llama/Llama-3.1-8B-Instruct")
    for precision, kv, calibration in (("fp8", "auto", CALIBRATION_DATA_BYTES), ("bf16", "auto", 0),
                                       ("bf16", "fp8", 0), ("bf16", "int8", CALIBRATION_DATA_BYTES)):
        result, _ = _render({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                             "precision": precision, "kvCacheDtype": kv})
        needed = model.hf_param_count * 2 + weight_bytes_per_gpu(model, Precision(precision), 1, 1) + calibration
        assert result.build.scratch_bytes == needed + int(needed * SCRATCH_MARGIN[0]) + SCRATCH_MARGIN[1]


def test_a_build_the_node_cannot_hold_is_refused_before_a_job_exists():
    spec = parse_service_spec({"model": {"source": "hf://Qwen/Qwen2.5-72B-Instruct"},
                               "precision": "fp8", "gpus": 1,
                               "gpu": {"type": "L40S", "nodeMemoryGiB": 64},
                               "engine": {"weightStreaming": True}})
    result, _ = planned(spec)
    assert result.fits is False and not result.buildable
    assert any("host memory" in r and "gpu.nodeMemoryGiB is 64" in r for r in result.reasons)


def test_the_engine_key_changes_with_gpus_per_node_only_for_multi_node():
    service = {"model": {"source": "hf://meta-llama/Llama-3.1-70B-Instruct"}, "precision": "fp8",
               "gpus": 8, "parallelism": {"tensor": 2, "pipeline": 4}}
    _, four = _render({**service, "gpu": {"type": "H100-80GB", "perNode": 4}})
    _, two = _render({**service, "gpu": {"type": "H100-80GB", "perNode": 2}})
    assert four.engine["spec"]["gpusPerNode"] == 4 and two.engine["spec"]["gpusPerNode"] == 2
    assert four.engine["spec"]["key"] != two.engine["spec"]["key"]
    _, single = _render({"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"}})
    assert "gpusPerNode" not in single.engine["spec"]


def test_a_djl_server_registers_the_engine_as_its_model_at_start():
    """djl-serving registers startup models from its model store (the image's /opt/ml/model,
    empty here) and from HF_MODEL_ID (ModelStore.initialize; a local path is the model's
    directory); OPTION_MODEL_ID alone only sets an option of a model registered otherwise,
    and a server with no model answers /ping with 200."""
    service = yaml.safe_load((ROOT / "examples" / "qwen2.5-7b-djl.yaml").read_text())["spec"]
    _, rendered = _render(service)
    [container] = rendered.workload["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    engine_dir = env["OPTION_MODEL_ID"]
    assert env["HF_MODEL_ID"] == engine_dir and engine_dir.startswith("/engines/")
    # The KV fraction under both handlers' names.
    assert env["OPTION_FREE_GPU_MEMORY_FRACTION"] == env["OPTION_KV_CACHE_FREE_GPU_MEM_FRACTION"]
    # And the pipeline-parallel degree under both.
    assert env["OPTION_PIPELINE_PARALLEL_SIZE"] == env["OPTION_PIPELINE_PARALLEL_DEGREE"]
