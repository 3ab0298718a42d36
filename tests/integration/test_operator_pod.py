"""``kiln run`` as the chart's pod runs it, on the real control plane: the image's user (uid
65532, which has no /etc/passwd entry, so HOME=/ and no user name), a minimal environment, and
a namespaced install (``watchNamespaces``): a release of its own, with the ServiceAccount and
exactly the RBAC the chart renders for that mode, taking the Lease. It must lead, stay up, and
reconcile a service in its namespace within seconds; and plan a model outside the catalog from
the Hub mirror the chart names (``--hub-endpoint``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import helm_python as helm
import yaml

from ..conftest import ROOT
from ..support.fake_hub import Repo, fake_hub
from ..support.real_cluster import free_port, path_of, stop_process, tied_to_parent

LEASE_NS = "kiln-system"
NS = "kiln-pod-test"
IMAGE_UID = 65532  # operator/Dockerfile: USER 65532:65532
RELEASE = "kilnns"  # beside the session's cluster-wide release "kiln"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
MIRRORED = "acme/llama-like"  # in no catalog: its config is the mirror's
LLAMA_LIKE = {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 16, "hidden_size": 2048,
              "intermediate_size": 8192, "num_attention_heads": 16, "num_key_value_heads": 8,
              "vocab_size": 32000, "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}


def _namespaced_release() -> tuple[list[dict], str]:
    """The release's RBAC objects, and the Lease its operator takes (from its Deployment's
    flags: a second release in kiln-system elects apart from the session's)."""
    rendered = helm.Chart.load(ROOT / "charts" / "kiln").render(
        {"watchNamespaces": [NS]}, name=RELEASE, namespace=LEASE_NS)
    objects = [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    [deployment] = [d for d in objects if d["kind"] == "Deployment"]
    [lease] = [a.split("=", 1)[1] for a in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
               if a.startswith("--leader-election-name=")]
    return [d for d in objects if d["kind"] in RBAC_KINDS], lease


def _kubeconfig(plane, token: str, path: Path) -> Path:
    """The release's ServiceAccount, its CA inline: nothing for uid 65532 to read but this file."""
    ca = base64.b64encode(Path(plane.ca_file).read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "plane", "cluster": {"server": plane.server, "certificate-authority-data": ca}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "plane", "user": "operator"}}]}))
    path.chmod(0o644)
    return path


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run the operator as the image's uid")
async def test_kiln_run_as_the_image_user_leads_and_reconciles_its_namespace_at_once(backend, control_plane):
    if backend != "real":
        pytest.skip("a process against the real API server")
    admin = control_plane.api()
    scratch = Path(tempfile.mkdtemp(prefix="kiln-pod-"))
    scratch.chmod(0o755)
    log_path = scratch / "operator.log"
    process = None
    stack = contextlib.ExitStack()
    try:
        for name in (LEASE_NS, NS):
            control_plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        rbac, lease_name = _namespaced_release()
        for obj in rbac:
            control_plane.apply(obj)
        response = control_plane.http.post(
            control_plane.server + path_of("serviceaccounts", LEASE_NS, RELEASE) + "/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": 3600}}, timeout=30)
        assert response.status_code == 201, response.text
        kubeconfig = _kubeconfig(control_plane, response.json()["status"]["token"], scratch / "kubeconfig")
        env = {"PATH": "/usr/bin:/bin", "HOME": "/", "KUBECONFIG": str(kubeconfig),
               "POD_NAME": "kiln-operator-0", "PYTHONPATH": str(ROOT / "operator")}
        hub = stack.enter_context(fake_hub({MIRRORED: Repo({"config.json": json.dumps(LLAMA_LIKE).encode()})}))
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                ["setpriv", "--reuid", str(IMAGE_UID), "--regid", str(IMAGE_UID), "--clear-groups",
                 sys.executable, "-m", "kiln", "run", "--metrics-port", str(free_port()),
                 "--health-port", str(free_port()), "-n", NS, "--leader-election-namespace", LEASE_NS,
                 "--leader-election-name", lease_name,
                 "--hub-endpoint", hub.url],
                env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)

        async def until(predicate, timeout, what):
            deadline = time.monotonic() + timeout
            while not await predicate():
                assert process.poll() is None, f"kiln run exited {process.returncode}: {log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"{what}: {log_path.read_text()[-3000:]}"
                await asyncio.sleep(0.2)

        async def leads():
            lease = await admin.get("coordination.k8s.io/v1", "Lease", lease_name, LEASE_NS)
            return ((lease or {}).get("spec") or {}).get("holderIdentity") == "kiln-operator-0"
        await until(leads, 60, "the operator takes the Lease")
        control_plane.apply(yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8.yaml").read_text())
                            | {"metadata": {"name": "llama-8b", "namespace": NS}},
                            plural="llmservices")

        async def reconciled():
            service = await admin.get("serving.kiln.dev/v1alpha1", "LLMService", "llama-8b", NS)
            return bool(((service or {}).get("status") or {}).get("conditions"))
        await until(reconciled, 20, "the service in the watched namespace has a status")

        # A model outside the catalog is planned from config.json read from the platform
        # team's Hub mirror (--hub-endpoint, the chart's modelStorage.hubEndpoint).
        control_plane.apply({"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                             "metadata": {"name": "mirrored", "namespace": NS},
                             "spec": {"model": {"source": f"hf://{MIRRORED}"}, "precision": "bf16"}},
                            plural="llmservices")

        async def planned_from_the_mirror():
            service = await admin.get("serving.kiln.dev/v1alpha1", "LLMService", "mirrored", NS)
            fits = next((c for c in ((service or {}).get("status") or {}).get("conditions", [])
                         if c["type"] == "Fits"), {})
            return fits.get("status") == "True"
        await until(planned_from_the_mirror, 20, "the mirrored model is planned")
        assert any(path.startswith(f"/{MIRRORED}/resolve/") for _, path, _ in hub.requests), hub.requests
        await asyncio.sleep(2)
        assert process.poll() is None, log_path.read_text()[-3000:]
    finally:
        if process is not None:
            stop_process(process, 10)
        lease = await admin.get("coordination.k8s.io/v1", "Lease", lease_name, LEASE_NS)
        if lease is not None:
            await admin.delete(lease)
        for name in ("llama-8b", "mirrored"):
            service = await admin.get("serving.kiln.dev/v1alpha1", "LLMService", name, NS)
            if service is not None:
                await admin.delete(service)
        stack.close()
        await admin.close()
        shutil.rmtree(scratch, ignore_errors=True)
