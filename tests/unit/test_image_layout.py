"""The image-layout manifest (kiln_runtime.image) against what the runtime and the rendered
pods use, and against runtime/Dockerfile's checks."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from kiln import toolchain as operator_toolchain
from kiln_runtime import build, image
from kiln_runtime.spec import parse_build_spec

from ..conftest import EXAMPLES, ROOT
from .test_runtime_build import _spec_for, _triton_examples

RUNTIME = ROOT / "runtime" / "kiln_runtime"
WRITABLE = ("/work", "/engines", "/tmp")
_PATH = re.compile(r"^/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$")


def _absolute_paths(source: str) -> set[str]:
    """String constants in a module that are absolute paths; for an f-string, its literal
    leading part when it starts with "/"."""
    tree = ast.parse(source)
    inside_fstrings = {id(value) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                       for value in node.values}
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value)
            if text.startswith("/"):
                out.add(text.rstrip("/") or text)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in inside_fstrings and _PATH.match(node.value):
            out.add(node.value)
    return out


def test_the_runtime_names_no_path_outside_the_manifest():
    seen = {}
    for module in sorted(RUNTIME.glob("*.py")):
        for path in _absolute_paths(module.read_text()):
            seen[path] = module.name
    assert "/app/examples" in seen  # the scan sees the toolchain's paths
    outside = {path: module for path, module in seen.items() if not image.covered(path)}
    assert not outside, f"paths the image-layout manifest lacks: {outside}"


def test_the_operators_image_paths_come_from_the_manifest():
    for path in (operator_toolchain.DJL_PARTITION_SCRIPT, operator_toolchain.DJL_LOG_DIR):
        assert image.covered(path)
    assert image.entry_for(operator_toolchain.DJL_PARTITION_SCRIPT).source


def test_runtime_dockerfile_checks_every_manifest_entry():
    dockerfile = (ROOT / "runtime" / "Dockerfile").read_text()
    checks = set(re.findall(r"test -e (\S+)", dockerfile))
    # what the build requires (not `! command -v` nor a `$(command -v ...)` lookup)
    commands = set(re.findall(r"(?<!\$\()(?<!! )command -v (\S+)", dockerfile))
    for entry in image.TRITON:
        assert entry.source
        if entry.kind == "command":
            assert entry.path in commands, f"runtime/Dockerfile does not check {entry.path}"
        else:
            assert entry.path in checks, f"runtime/Dockerfile does not check {entry.path}"
    manifest = {e.path for e in image.TRITON}
    assert checks | commands <= manifest, "runtime/Dockerfile checks a path the manifest lacks"
    assert 'test "$(id -u triton-server)" = 1000' in dockerfile  # the pods' runAsUser
    # The operator's command is in the same package; its dependencies are not in the image.
    assert 'rm "$(command -v kiln)" && ! command -v kiln' in dockerfile
    assert dockerfile.index("test -e") < dockerfile.index("USER 1000")


def _writable(path: str) -> bool:
    return any(path == root or path.startswith(root + "/") for root in WRITABLE) \
        and not any(path.startswith(e.path) for e in image.NOT_WRITABLE)


@pytest.mark.parametrize("example", [name for name, _ in _triton_examples()])
def test_every_example_dry_run_uses_manifest_paths_and_a_writable_working_directory(example, monkeypatch):
    for name in ("KILN_TRTLLM_EXAMPLES", "KILN_TRTLLM_BUILD", "KILN_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    manifest = dict(_triton_examples())[example]
    raw, config = _spec_for(manifest, manifest["spec"].get("precision", "bf16"))
    result = build.dry_run(parse_build_spec(raw), config)
    tools = [step for step in result["steps"] if step["argv"][0] != "kiln-runtime"]
    for step in result["steps"]:
        for arg in step["argv"]:
            if arg.startswith("/"):
                assert image.covered(arg), f"{step['name']}: {arg} is in no manifest entry"
    for step in tools:
        assert _writable(step["cwd"]), step
    checkpoint = tools[0]["argv"]
    assert checkpoint[1].startswith(image.EXAMPLES_DIR + "/") and image.entry_for(checkpoint[1])
    engine = next(s["argv"] for s in tools if s["name"] == "engine")
    assert _writable(engine[engine.index("--output_timing_cache") + 1])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_pods_work_in_writable_directories(path):
    result = subprocess.run([sys.executable, "-m", "kiln", "render", "-f", str(path), "-o", "json"],
                            capture_output=True, text=True, timeout=60)
    pods = []
    for obj in json.loads(result.stdout)["items"]:
        spec = obj.get("spec", {})
        if obj["kind"] in ("Job", "Deployment"):
            pod = spec["template"]["spec"]
            # A gateway's endpoint picker runs the Inference Extension's image, not Kiln's.
            if all(c["image"] != operator_toolchain.EPP_IMAGE for c in pod["containers"]):
                pods.append(pod)
        elif obj["kind"] == "LeaderWorkerSet":
            template = spec["leaderWorkerTemplate"]
            pods += [template["leaderTemplate"]["spec"], template["workerTemplate"]["spec"]]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsUser"] == 1000
        for container in pod.get("initContainers", []) + pod["containers"]:
            if container["image"].startswith("deepjavalibrary/"):
                # DJL Serving writes $MODEL_SERVER_HOME/logs; /opt/djl belongs to djl.
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert image.DJL_LOG_DIR in mounts, container["name"]
            else:
                assert _writable(container["workingDir"]), container["name"]



@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_container_that_uses_a_gpu_runs_through_its_images_entrypoint(path):
    """A pod's `command` replaces the image's ENTRYPOINT, and the images' entrypoints are what
    set up CUDA forward compatibility on a node whose driver is older than the image's CUDA
    (kiln_runtime.image.NGC_ENTRYPOINT, DJL_ENTRYPOINT): a container with a GPU either names
    its image's entrypoint first or names no command at all (DJL Serving's own)."""
    result = subprocess.run([sys.executable, "-m", "kiln", "render", "-f", str(path), "-o", "json"],
                            capture_output=True, text=True, timeout=60, check=True)
    entrypoints = {operator_toolchain.DJL_IMAGE: image.DJL_ENTRYPOINT}
    seen = 0
    for obj in json.loads(result.stdout)["items"]:
        pod = (obj.get("spec") or {}).get("template", {}).get("spec") or {}
        templates = [pod] + [t["spec"] for t in (obj.get("spec", {}).get("leaderWorkerTemplate") or {}).values()
                             if isinstance(t, dict) and "spec" in t]
        for spec in templates:
            for container in spec.get("containers", []):
                limits = (container.get("resources") or {}).get("limits") or {}
                if not any(name.endswith("/gpu") for name in limits):
                    continue
                seen += 1
                command = container.get("command")
                wanted = entrypoints.get(container["image"], image.NGC_ENTRYPOINT)
                assert command is None or command[0] == wanted, (obj["kind"], container["name"], command)
    assert seen >= 2  # the build and the server
