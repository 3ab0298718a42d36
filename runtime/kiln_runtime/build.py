"""``kiln-runtime build``: resolve → download → checkpoint → trtllm-build → verify → publish.

Each step is logged as ``[i/n] name`` with its command line, streamed output and timing.
Failures remove the staging directory (the cache never holds a partial entry), exit 1 and
name the step; the summary goes to the termination-message file either way, so the operator
can show engine size and build time without reading logs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from . import cache, checkpoint, source, toolchain
from .errors import StepFailed
from .spec import BuildSpec
from .steps import Layout, Step, check_model, check_weights, plan_steps, predict_engine_config

__all__ = ["dry_run", "run_build", "termination_log_path"]


def termination_log_path() -> Path | None:
    configured = os.environ.get("KILN_TERMINATION_LOG")
    if configured:
        return Path(configured)
    default = Path("/dev/termination-log")
    return default if default.exists() else None


def report(summary: dict[str, Any]) -> None:
    path = termination_log_path()
    if path is not None:
        # The kubelet keeps at most 4096 bytes of it.
        path.write_text(json.dumps(summary, sort_keys=True)[:4096])


def dry_run(spec: BuildSpec, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The steps a build would run, and the engine config.json they will produce. Reads the
    model's config.json (unless given) to check the model; touches nothing else."""
    if config is None:
        config = source.read_config(spec.source, spec.revision)
    architecture = check_model(spec, config)
    return {"engineKey": spec.engine_key, "architecture": architecture,
            "steps": [step.wire() for step in plan_steps(spec, architecture)],
            "engineConfig": predict_engine_config(spec, architecture, config)}


def _log(out: TextIO, message: str) -> None:
    print(message, file=out, flush=True)


def _run_child(step: Step, out: TextIO) -> None:
    try:
        if step.cwd:
            os.makedirs(step.cwd, exist_ok=True)
        process = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, cwd=step.cwd)
    except OSError as error:
        raise StepFailed(step.name, f"cannot start {step.argv[0]}: {error.strerror}") from None
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        _log(out, f"  | {line.rstrip()}")
        tail = (tail + [line.rstrip()])[-5:]
    process.stdout.close()
    code = process.wait()
    if code != 0:
        last = "; last output: " + " | ".join(tail) if tail else ""
        raise StepFailed(step.name, f"{os.path.basename(step.argv[0])} exited with {code}{last}")


def _report_failure(spec: BuildSpec, error: StepFailed) -> None:
    report({"engineKey": spec.engine_key, "result": "failed", "step": error.step, "message": str(error)[:1000]})


def _reused(spec: BuildSpec, manifest: dict[str, Any]) -> dict[str, Any]:
    summary = {"engineKey": spec.engine_key, "result": "reused",
               "engineBytes": manifest.get("engineBytes"), "buildSeconds": 0}
    report(summary)
    return summary


def _afresh(root: Path, directory: Path) -> None:
    """``directory`` (under ``root``) empty and the build's own: a link at it or at any
    directory between ``root`` and it is removed (never followed), a crashed build's leftovers
    too."""
    for step in reversed([directory, *directory.parents]):
        if step == root or root not in step.parents:
            continue
        if step.is_symlink() or (step.exists() and not step.is_dir()):
            step.unlink()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


def _check_group_tokenizer(spec: BuildSpec, model_dir: Path) -> None:
    """An engine built across nodes is served by a multi-node leader, which holds the token
    that may exec into its workers and refuses a tokenizer that runs code of its own
    (``serve.prepare``): refused here, as a failed build, before any GPU work."""
    if spec.gpus_per_node and (code := cache.remote_code(model_dir)):
        raise StepFailed("checkpoint", cache.leader_refuses(code))


def run_build(spec: BuildSpec, out: TextIO = sys.stderr) -> dict[str, Any]:
    """Build (or reuse) the engine; returns the summary also written to the termination log."""
    layout = Layout(spec)
    started = time.monotonic()
    existing = cache.complete_entry(spec.cache_dir, spec.engine_key)
    if existing is not None:
        _log(out, f"engine {spec.engine_key[:12]} is already in the cache: reusing it")
        return _reused(spec, existing)
    _log(out, f"[resolve] {spec.source}@{spec.revision}: reading config.json")
    architecture = check_model(spec, source.read_config(spec.source, spec.revision))
    if spec.source.startswith("/"):
        # A mounted source is read in place, with no download step to check it: every file on
        # it must resolve inside its volume before any step reads it (a link to the pod's
        # environment would otherwise reach the engine cache through the tokenizer copy).
        source.download(spec.source, spec.revision, layout.model_dir)
    steps = plan_steps(spec, architecture)
    try:  # before the lock file and any download
        cache.check_writable(spec.cache_dir)
    except StepFailed as error:
        _report_failure(spec, error)
        raise
    with cache.build_lock(layout.lock):
        existing = cache.complete_entry(spec.cache_dir, spec.engine_key)
        if existing is not None:  # another Job published it while this one waited
            _log(out, "another build published this engine while waiting: reusing it")
            return _reused(spec, existing)
        # The build's own directories on the shared volume, made afresh, with no link on the
        # way to them: a link planted at .staging/<key> or .work/<key> (or their parents) would
        # have the build write into whatever it points to, another engine's entry.
        _afresh(spec.cache_dir, layout.staging)
        if spec.cache_dir in spec.work_dir.parents:  # scratch staged on the cache volume
            _afresh(spec.cache_dir, spec.work_dir)
        manifest: dict[str, Any] = {}
        try:
            for index, step in enumerate(steps, 1):
                _log(out, f"[{index}/{len(steps)}] {step.name}: {step.description}")
                _log(out, f"  $ {shlex.join(step.argv)}")
                step_started = time.monotonic()
                if step.name == "download":
                    source.download(spec.source, spec.revision, layout.model_dir)
                elif step.name == "calibration":
                    source.fetch_calibration(spec.calibration_source, layout.calibration_dir)
                elif step.name == "mapping":
                    checkpoint.set_gpus_per_node(layout.checkpoint_dir, spec.gpus_per_node)
                elif step.name == "verify":
                    cache.verify_engine(layout.staging / "engine", spec.world_size)
                elif step.name == "publish":
                    manifest = cache.publish(
                        layout.staging, spec.cache_dir, spec.engine_key, layout.model_dir,
                        spec.inputs(), {"tensorrt_llm": toolchain.TRTLLM_VERSION,
                                        "spec": spec.toolchain},
                        time.monotonic() - started,
                        boundary=source.mount_of(spec.source) if spec.source.startswith("/") else None)
                else:
                    if step.name == "checkpoint":  # downloaded or mounted, before any GPU work
                        check_weights(layout.model_dir)
                        _check_group_tokenizer(spec, layout.model_dir)
                    _run_child(step, out)
                _log(out, f"  done in {time.monotonic() - step_started:.1f}s")
        except BaseException as error:
            shutil.rmtree(layout.staging, ignore_errors=True)
            if isinstance(error, StepFailed):
                _report_failure(spec, error)
            raise
        finally:
            shutil.rmtree(layout.checkpoint_dir, ignore_errors=True)
            if spec.cache_dir in spec.work_dir.parents:  # scratch staged on the cache volume
                shutil.rmtree(spec.work_dir, ignore_errors=True)
    summary = {"engineKey": spec.engine_key, "result": "built",
               "engineBytes": manifest.get("engineBytes"),
               "buildSeconds": round(time.monotonic() - started, 1)}
    report(summary)
    _log(out, f"engine {spec.engine_key[:12]} published to {layout.final} "
              f"({(manifest.get('engineBytes') or 0) / 2**30:.2f} GiB) in {summary['buildSeconds']}s")
    return summary
