"""Fake TensorRT-LLM tools for build tests: same argument parsers as the real ones, tiny outputs.

The parsers are built from ``reference/trtllm-build-args.json`` (the argument lists
recorded from TensorRT-LLM's sources), so an unknown flag or a value outside the recorded
choices fails here exactly as argparse would fail in the real tool. The outputs mimic the
real layout: a checkpoint is ``config.json`` (with ``mapping``) + ``rank{N}.safetensors``; an
engine is ``config.json`` (``pretrained_config.mapping``, ``build_config``) + ``rank{R}.engine``.

``install(tmp_path)`` writes ``quantize.py``, ``models/core/{llama,qwen}/convert_checkpoint.py``
(each with its own recorded CLI) and a ``trtllm-build`` executable, and returns the
environment that points kiln-runtime at them. ``KILN_FAKE_FAIL=<tool>`` makes that tool exit
3; ``KILN_FAKE_HANG=<tool>`` makes it write part of its output and then hang (a build the
kubelet kills); every call is appended to ``KILN_FAKE_CALLS``.

What the real tools do that decides whether an engine loads, the fakes do the same way:
checkpoints record ``Mapping``'s default ``gpus_per_node`` of 8 (neither converter nor
quantize.py takes it); trtllm-build copies the checkpoint's mapping and quantization into
the engine's ``config.json``, resolves ``--gemm_plugin`` (``disable`` -> None, ``auto`` ->
the checkpoint dtype) and, as rank 0, saves its timing cache to ``--output_timing_cache``
(default ``model.cache`` in the working directory) with ``assert ok``. With
``KILN_FAKE_WRITABLE`` set (``:``-separated roots), writing anywhere else fails as it does
for uid 1000 in the image (``/opt/tritonserver`` is root-owned).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import time
import sys
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent / "reference" / "trtllm-build-args.json"
TOOLS = {"trtllm-build": "trtllm-build", "quantize.py": "quantize",
         "llama/convert_checkpoint.py": "convert_checkpoint_llama",
         "qwen/convert_checkpoint.py": "convert_checkpoint_qwen"}
# quantize.py --qformat / convert_checkpoint.py flags -> the QuantAlgo the checkpoint records.
QFORMAT_ALGO = {"fp8": "FP8", "int8_sq": "W8A8_SQ_PER_CHANNEL", "int4_awq": "W4A16_AWQ",
                "w4a8_awq": "W4A8_AWQ", "int8_wo": "W8A16", "int4_wo": "W4A16", "nvfp4": "NVFP4",
                "full_prec": None}


def tool_of(path: str) -> str:
    """The recorded-CLI key for a tool's path (converters differ per architecture)."""
    for suffix, key in TOOLS.items():
        if path == suffix or path.endswith("/" + suffix):
            return key
    raise KeyError(path)


def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def parser_for(tool: str) -> argparse.ArgumentParser:
    """``tool`` is a recorded-CLI key (``quantize``, ``convert_checkpoint_qwen``, ...)."""
    parser = argparse.ArgumentParser(prog=tool, allow_abbrev=False)
    for flag, info in reference()[tool].items():
        if not flag.startswith("--"):
            continue  # short aliases such as -sq
        kind = info["type"]
        choices = [c for c in (info.get("choices") or []) if c is not None] or None
        default = info.get("default")
        # recorded defaults that argparse would not produce itself (enum reprs, SUPPRESS)
        if kind.startswith("int") and not isinstance(default, int) \
                or isinstance(default, str) and (" " in default or default == "==SUPPRESS=="):
            default = None
        if kind == "flag":
            parser.add_argument(flag, action="store_true")
        elif kind.startswith("int"):
            parser.add_argument(flag, type=int, choices=choices, default=default)
        elif kind.startswith("float"):
            parser.add_argument(flag, type=float, default=default)
        elif "nargs=+" in kind:
            parser.add_argument(flag, nargs="+", default=default)
        elif "nargs=?" in kind:
            parser.add_argument(flag, nargs="?", const=kind.split("const=")[1].rstrip(")"),
                                choices=choices, default=default)
        else:
            parser.add_argument(flag, choices=choices, default=default)
    return parser


def _record(tool: str, argv: list[str]) -> None:
    calls = os.environ.get("KILN_FAKE_CALLS")
    if calls:
        with open(calls, "a") as handle:
            handle.write(json.dumps([tool, *argv]) + "\n")
    if os.environ.get("KILN_FAKE_FAIL") == tool:
        print(f"{tool}: simulated failure (CUDA out of memory)", flush=True)
        sys.exit(3)


def _quantization(tool: str, args: argparse.Namespace) -> dict:
    if tool == "quantize":
        return {"quant_algo": QFORMAT_ALGO[args.qformat],
                "kv_cache_quant_algo": (args.kv_cache_dtype or "").upper() or None}
    algo = None
    if args.use_weight_only:
        algo = {"int8": "W8A16", "int4": "W4A16"}[args.weight_only_precision]
    kv = "INT8" if args.int8_kv_cache else "FP8" if getattr(args, "fp8_kv_cache", False) else None
    return {"quant_algo": algo, "kv_cache_quant_algo": kv}


def _read_calibration_set(dataset: str, calib_size: int) -> None:
    """quantize.py's reading of a local calibration set, as get_calib_dataloader does it
    (tensorrt_llm/quantization/quantize_by_modelopt.py): a directory, unless its path names one
    of the datasets it knows, is loaded with datasets.load_dataset, train split, "text" column."""
    if any(name in dataset for name in ("cnn_dailymail", "scienceqa", "science_qa")) \
            or dataset == "pileval" or not os.path.isdir(dataset):
        return  # a Hub dataset: nothing to fetch here
    from datasets import load_dataset

    texts = load_dataset(dataset, split="train")["text"][:calib_size]
    print(f"calibrating on {len(texts)} samples from {dataset}", flush=True)


def checkpoint_tool(tool: str, argv: list[str]) -> None:
    args = parser_for(tool).parse_args(argv)
    _record("quantize.py" if tool == "quantize" else "convert_checkpoint.py", argv)
    if tool == "quantize":
        _read_calibration_set(args.calib_dataset, args.calib_size)
    model = json.loads((Path(args.model_dir) / "config.json").read_text())
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = args.tp_size * args.pp_size
    dtype = args.dtype if args.dtype != "auto" else model.get("torch_dtype", "bfloat16")
    config = {"architecture": model["architectures"][0], "dtype": dtype,
              "num_hidden_layers": model["num_hidden_layers"],
              "mapping": {"world_size": world, "gpus_per_node": 8, "tp_size": args.tp_size,
                          "pp_size": args.pp_size},
              "quantization": _quantization(tool, args)}
    (out / "config.json").write_text(json.dumps(config))
    for rank in range(world):
        (out / f"rank{rank}.safetensors").write_bytes(b"\0" * 64)
        print(f"wrote rank {rank}/{world}", flush=True)


def _save_timing_cache(path: str) -> None:
    target = Path(path).resolve()  # relative paths land in the working directory
    roots = [Path(r).resolve() for r in os.environ.get("KILN_FAKE_WRITABLE", "").split(":") if r]
    if roots and not any(target == r or r in target.parents for r in roots):
        print(f"PermissionError: [Errno 13] Permission denied: '{target}'", flush=True)
        print("AssertionError: Failed to save timing cache.", flush=True)
        sys.exit(1)
    target.write_bytes(b"timing-cache")


def trtllm_build(argv: list[str]) -> None:
    args = parser_for("trtllm-build").parse_args(argv)
    _record("trtllm-build", argv)
    checkpoint = json.loads((Path(args.checkpoint_dir) / "config.json").read_text())
    mapping = checkpoint["mapping"]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    gemm = {"disable": None, "auto": checkpoint["dtype"], None: None}.get(args.gemm_plugin,
                                                                         args.gemm_plugin)
    if checkpoint["quantization"]["quant_algo"] == "NVFP4" and args.gemm_plugin is None:
        gemm = "nvfp4"  # builder.py enables it unless gemm_plugin is explicitly disabled
    config = {"version": "1.2.1",
              # Mapping.from_dict: the checkpoint's gpus_per_node, else Mapping's default 8
              "pretrained_config": {**checkpoint, "mapping": {"gpus_per_node": 8, **mapping}},
              "build_config": {"max_batch_size": args.max_batch_size, "max_input_len": args.max_input_len,
                               "max_seq_len": args.max_seq_len, "max_num_tokens": args.max_num_tokens,
                               "max_beam_width": args.max_beam_width,
                               "weight_streaming": bool(args.weight_streaming),
                               "plugin_config": {"tokens_per_block": args.tokens_per_block,
                                                 "gemm_plugin": gemm,
                                                 "use_paged_context_fmha": args.use_paged_context_fmha == "enable"}}}
    (out / "config.json").write_text(json.dumps(config))
    for rank in range(mapping["world_size"]):
        (out / f"rank{rank}.engine").write_bytes(os.urandom(256))
        if rank == 0:
            _save_timing_cache(args.output_timing_cache or "model.cache")
        if os.environ.get("KILN_FAKE_HANG") == "trtllm-build":
            print("[TensorRT-LLM] [I] building the next rank...", flush=True)
            time.sleep(3600)
        print(f"[TensorRT-LLM] [I] Engine for rank {rank} built", flush=True)


_SCRIPT = """#!{python}
import sys
sys.path.insert(0, {support!r})
from fake_trtllm import {function}
{call}
"""


def install(root: Path) -> dict[str, str]:
    """Write the fakes under ``root``; return the environment that selects them."""
    support = str(Path(__file__).resolve().parent)
    examples = root / "examples"
    scripts = {
        examples / "quantization" / "quantize.py": ("checkpoint_tool", "checkpoint_tool('quantize', sys.argv[1:])"),
        examples / "models/core/llama/convert_checkpoint.py": ("checkpoint_tool", "checkpoint_tool('convert_checkpoint_llama', sys.argv[1:])"),
        examples / "models/core/qwen/convert_checkpoint.py": ("checkpoint_tool", "checkpoint_tool('convert_checkpoint_qwen', sys.argv[1:])"),
        root / "bin" / "trtllm-build": ("trtllm_build", "trtllm_build(sys.argv[1:])"),
    }
    for path, (function, call) in scripts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_SCRIPT.format(python=sys.executable, support=support, function=function, call=call))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return {"KILN_TRTLLM_EXAMPLES": str(examples), "KILN_PYTHON": sys.executable,
            "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def tiny_model(path: Path, architecture: str = "LlamaForCausalLM") -> Path:
    """A model directory with a real-shaped config and tokenizer files (weights are fake)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "architectures": [architecture], "num_hidden_layers": 2, "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 256, "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}))
    (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    (path / "model.safetensors").write_bytes(b"\0" * 128)
    return path
