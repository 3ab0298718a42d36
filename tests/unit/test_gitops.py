"""GitOps: the Argo CD health check (run in a real Lua interpreter, lupa), the kustomize
example overlays, and `kiln render` as an Argo CD config-management plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonpatch
import lupa
import pytest
import yaml

from kiln.api import Reason, parse_service_spec

from ..conftest import ROOT
from ..support.kube_versions import validate_on_claimed_minors
from ..support.planning import planned

HEALTH = ROOT / "gitops" / "argocd" / "resource_customizations" / "serving.kiln.dev" / "LLMService"
GITOPS = ROOT / "examples" / "gitops"
CASES = yaml.safe_load((HEALTH / "health_test.yaml").read_text())["tests"]


def argo_health(obj: dict) -> dict:
    """Run health.lua the way Argo CD does: the object as the global ``obj``, a table back."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((HEALTH / "health.lua").read_text())
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_argo_cd_health_check(case):
    obj = yaml.safe_load((HEALTH / case["inputPath"]).read_text())
    assert argo_health(obj) == case["healthStatus"]
    for condition in (obj.get("status") or {}).get("conditions", []):
        assert condition["reason"] in Reason._value2member_map_, "fixtures use the operator's reasons"


def test_every_health_state_has_a_fixture():
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded"}


def test_the_argocd_cm_patch_carries_the_same_lua():
    patch = yaml.safe_load((ROOT / "gitops" / "argocd" / "argocd-cm-patch.yaml").read_text())
    embedded = patch["data"]["resource.customizations.health.serving.kiln.dev_LLMService"]
    assert embedded.strip() == (HEALTH / "health.lua").read_text().strip()


def kustomize(overlay: Path) -> list[dict]:
    """The subset of kustomize the examples use: resources, namespace, JSON 6902 patches."""
    config = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for resource in config.get("resources", []):
        path = overlay / resource
        if path.is_dir():
            objects += kustomize(path)
        else:
            objects += [o for o in yaml.safe_load_all(path.read_text()) if o]
    for entry in config.get("patches", []):
        target = entry["target"]
        for i, obj in enumerate(objects):
            if obj["kind"] == target["kind"] and obj["metadata"]["name"] == target["name"]:
                objects[i] = jsonpatch.apply_patch(obj, yaml.safe_load(entry["patch"]))
    if "namespace" in config:
        for obj in objects:
            obj["metadata"]["namespace"] = config["namespace"]
    return objects


@pytest.mark.parametrize("overlay, namespace, gpu, replicas", [
    ("staging", "llm-staging", "L40S", (1, 1)),
    ("production", "llm", "H100-80GB", (2, 8)),
])
def test_kustomize_overlays_give_services_that_fit(overlay, namespace, gpu, replicas):
    [service] = kustomize(GITOPS / "overlays" / overlay)
    assert service["metadata"]["namespace"] == namespace
    spec = parse_service_spec(service["spec"])
    assert spec.gpu.type == gpu
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == replicas
    result, _ = planned(spec)
    assert result.fits is True


def test_kiln_render_as_an_argo_cd_config_management_plugin(tmp_path):
    plugin = yaml.safe_load((ROOT / "gitops" / "argocd" / "cmp-plugin.yaml").read_text())
    for path in (GITOPS / "base").glob("*.yaml"):
        shutil.copy(path, tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    found = subprocess.run(plugin["spec"]["discover"]["find"]["command"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert found == ["llama-3.1-8b.yaml"]
    out = subprocess.run(plugin["spec"]["generate"]["command"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    kinds = [o["kind"] for o in objects]
    # up to two replicas: one at a time through a drain
    assert kinds == ["LLMEngine", "Job", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"]
    for obj in objects:
        if obj["apiVersion"] in ("batch/v1", "apps/v1", "v1", "policy/v1"):
            validate_on_claimed_minors(obj)
