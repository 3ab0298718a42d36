"""A service calibrated on a set of its own, on both back-ends: a credentials Secret without the
keys its calibration bucket is read with is named in the service's status before any Job
exists (the Job would otherwise sit in CreateContainerConfigError, naming no field), while in a
namespace whose Secret has them the build Job reads the set with them and the service becomes
Ready."""

from __future__ import annotations

import copy
import json

import yaml

from ..conftest import ROOT

NS = "llm"
OTHER = "team-b"
SECRET = "hf-token"  # the one Secret name the chart lets the operator read by default


def _service(namespace):
    manifest = yaml.safe_load((ROOT / "examples" / "qwen2.5-7b-fp8-own-calibration.yaml").read_text())
    manifest = copy.deepcopy(manifest)
    manifest["metadata"]["namespace"] = namespace
    manifest["spec"]["model"]["credentials"] = {"secretName": SECRET}
    manifest["spec"]["model"]["calibration"] = {"source": "s3://calibration/support-chats"}
    return manifest


async def test_a_secret_without_the_buckets_keys_is_named_and_one_with_them_builds(make_sandbox):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        for namespace in (NS, OTHER):
            sb.add_namespace(namespace)
        await sb.add_secret(NS, SECRET, {"HF_TOKEN": "hf_abc"})
        await sb.add_secret(OTHER, SECRET, {"HF_TOKEN": "hf_abc", "AWS_ACCESS_KEY_ID": "AKIA0",
                                            "AWS_SECRET_ACCESS_KEY": "secret0"})
        await sb.start_operator()
        sb.start_kubelet()
        for namespace in (NS, OTHER):
            await sb.create(_service(namespace))
        name = "qwen-7b-calib"

        def ready(namespace):
            svc = sb.get("llmservices", name, namespace) or {}
            return next((c for c in (svc.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {})

        await sb.wait_for(lambda: ready(NS).get("reason") == "CredentialsRequired" and
                          ready(OTHER).get("status") == "True", timeout=60, what="one named, one Ready")
        message = ready(NS)["message"]
        assert message.startswith(f"spec.model.credentials.secretName: Secret {sb.ns(NS)}/{SECRET} has "
                                  "no AWS_ACCESS_KEY_ID and no AWS_SECRET_ACCESS_KEY, with which "
                                  "spec.model.calibration.source (s3://calibration/support-chats) is read"), message
        [job] = sb.objects("jobs")  # the other namespace's only
        assert job["metadata"]["namespace"] == sb.ns(OTHER)
        container = job["spec"]["template"]["spec"]["containers"][0]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        assert set(refs) == {"HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        spec = json.loads(next(e["value"] for e in container["env"] if e["name"] == "KILN_BUILD_SPEC"))
        assert spec["calibration"] == {"source": "s3://calibration/support-chats"}
        [engine] = sb.objects("llmengines")
        assert engine["spec"]["calibrationSource"] == "s3://calibration/support-chats"
