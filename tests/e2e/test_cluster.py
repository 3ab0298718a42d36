"""Opt-in end-to-end suite against the cluster in KUBECONFIG (kind works for all but the GPU test).

    KILN_E2E=1 python -m pytest tests/e2e            # CRDs, admission rules, operator up to the build
    KILN_E2E=1 KILN_E2E_GPU=1 python -m pytest tests/e2e   # also waits for Ready on real GPUs

It installs the generated CRDs, runs the operator in-process against the cluster and works in
a throwaway namespace (deleted afterwards). Without GPUs the build Job stays Pending, so the
default run checks everything up to the Job; with ``KILN_E2E_GPU=1`` it waits for Ready and
asks Triton's readiness endpoint through the Service proxy (needs an RWX StorageClass for the engine
cache).
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
import uuid

import pytest
import yaml

from kiln.api.crd import crds

from ..conftest import ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("KILN_E2E") != "1", reason="set KILN_E2E=1 to run against KUBECONFIG"),
]

GROUP, VERSION = "serving.kiln.dev", "v1alpha1"


@pytest.fixture(scope="module")
def k8s():
    from kubernetes import client, config

    config.load_kube_config()
    return client


@pytest.fixture(scope="module")
def installed(k8s):
    ext = k8s.ApiextensionsV1Api()
    for crd in crds():
        name = crd["metadata"]["name"]
        try:
            current = ext.read_custom_resource_definition(name)
            crd = {**crd, "metadata": {**crd["metadata"],
                                       "resourceVersion": current.metadata.resource_version}}
            ext.replace_custom_resource_definition(name, crd)
        except k8s.exceptions.ApiException as error:
            if error.status != 404:
                raise
            ext.create_custom_resource_definition(crd)
    time.sleep(2)  # let discovery catch up
    return True


@pytest.fixture
def namespace(k8s, installed):
    name = f"kiln-e2e-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api()
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def operator(installed):
    from kiln.controller.operator import run_against_kubeconfig

    stop = threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(run_against_kubeconfig(stop_flag=stop)),
                              daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(30)


def _service(namespace: str, **spec_changes):
    manifest = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"].update(spec_changes)
    return manifest


def _wait(fetch, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if predicate(value):
            return value
        time.sleep(2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _condition(obj, type_):
    for condition in (obj.get("status") or {}).get("conditions", []):
        if condition["type"] == type_:
            return condition
    return None


def test_admission_rejects_what_the_crd_rules_forbid(k8s, namespace):
    custom = k8s.CustomObjectsApi()
    bad = _service(namespace, gpus=2, parallelism={"tensor": 4, "pipeline": 1})
    with pytest.raises(k8s.exceptions.ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "llmservices", bad)
    assert error.value.status == 422
    assert "parallelism" in error.value.body


def test_operator_plans_and_starts_the_build(k8s, namespace, operator):
    custom = k8s.CustomObjectsApi()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "llmservices", _service(namespace))

    def fetch():
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "llmservices", "mistral-7b")

    svc = _wait(fetch, lambda s: _condition(s, "EngineReady") is not None, 120, "EngineReady")
    assert _condition(svc, "Fits")["status"] == "True"
    assert svc["status"]["observedGeneration"] == svc["metadata"]["generation"]
    job_name = svc["status"]["engine"]["buildJob"]
    job = k8s.BatchV1Api().read_namespaced_job(job_name, namespace)
    image = job.spec.template.spec.containers[0].image
    assert "kiln-runtime" in image and "trtllm1.2.1" in image
    engine = custom.get_cluster_custom_object(GROUP, VERSION, "llmengines", svc["status"]["engine"]["name"])
    assert engine["spec"]["key"] == svc["status"]["engine"]["key"]


@pytest.mark.skipif(os.environ.get("KILN_E2E_GPU") != "1", reason="set KILN_E2E_GPU=1 on a GPU cluster")
def test_ready_and_serving_on_gpus(k8s, namespace, operator):
    custom = k8s.CustomObjectsApi()
    core = k8s.CoreV1Api()
    core.create_namespaced_persistent_volume_claim(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "kiln-engine-cache"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "200Gi"}}}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "llmservices", _service(namespace))

    def fetch():
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "llmservices", "mistral-7b")

    svc = _wait(fetch, lambda s: (_condition(s, "Ready") or {}).get("status") == "True", 3600, "Ready")
    response = core.connect_get_namespaced_service_proxy_with_path(
        "mistral-7b-server:8000", namespace, "v2/health/ready")
    assert response is not None
    assert svc["status"]["readyReplicas"] >= 1
    # The OpenAI-compatible API at the URL status reports, serving the service's name.
    assert svc["status"]["endpoints"]["openai"] == f"http://mistral-7b-server.{namespace}.svc:9000/v1"
    models = core.connect_get_namespaced_service_proxy_with_path(
        "mistral-7b-server:9000", namespace, "v1/models")
    assert "mistral-7b" in str(models)
