"""No secret value leaves its Secret: not into rendered objects, status, Events or log lines.

Two services read credentials (an ``hf://`` model with ``HF_TOKEN``, an ``s3://`` model with
AWS keys). The operator runs them to Ready with every logger at DEBUG, and then the whole
API server (every object and every watch event of every kind but Secrets), every log record,
the operator's metrics page and ``kiln render``'s output are searched for the secret values,
raw and base64-encoded. On both back-ends: the emulator keeps every watch event it sent; on
the real API server, which keeps none, the test watches every kind but Secrets from before
the operator starts.
"""

from __future__ import annotations

import base64
import copy
import asyncio
import contextlib
import json
import logging

import yaml
from prometheus_client import generate_latest

from kiln.cli import main as kiln_main
from kiln.decide.conditions import is_true
from kiln.demo.watch import ListWatch

from ..conftest import ROOT
from ..support.real_cluster import KINDS_BY_PLURAL, path_of

NS = "llm"
# The one Secret name the chart lets the operator read by default (modelCredentials.secretNames).
CREDENTIALS = "hf-token"
SECRETS = {"HF_TOKEN": "hf_SeNtInElxTokenValue0123456789",
           "AWS_ACCESS_KEY_ID": "AKIASENTINELKEYID0001",
           "AWS_SECRET_ACCESS_KEY": "wJalrSeNtInElSecretAccessKeyValue/0123"}
NEEDLES = [v for value in SECRETS.values()
           for v in (value, base64.b64encode(value.encode()).decode())]


def _services():
    hf = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
    hf["spec"]["model"]["credentials"] = {"secretName": CREDENTIALS}
    s3 = copy.deepcopy(hf)
    s3["metadata"]["name"] = "from-s3"
    s3["spec"]["model"]["source"] = "s3://models-bucket/mistral-7b-instruct"
    return [hf, s3]


def _leaks(text):
    return [needle for needle in NEEDLES if needle in text]


@contextlib.asynccontextmanager
async def _watching(sb, backend):
    """Every object and every watch event of every kind but Secrets, as they are by the end:
    ``(stored, watched)`` lists filled in on exit."""
    stored, watched = [], []
    if backend == "emulator":
        yield stored, watched
        stored += [obj.raw for (res, _, _), obj in list(sb.emulator.objects.items()) if res.plural != "secrets"]
        watched += [event for res, events in sb.emulator._history.items() if res.plural != "secrets"
                    for _, event in events]
        return
    streams = ListWatch(sb.plane.server, sb.plane.admin_token, sb.plane.ca_file)
    plurals = [plural for plural in KINDS_BY_PLURAL if plural != "secrets"]

    async def record(plural):
        async for _, event in streams.events(path_of(plural)):
            watched.append(event)

    tasks = [asyncio.create_task(record(plural)) for plural in plurals]
    try:
        yield stored, watched
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await streams.close()
    stored += [obj for plural in plurals for obj in sb.objects(plural)]
    assert len(watched) > 50, "the watches saw the run"


async def test_no_secret_value_reaches_objects_status_events_logs_or_metrics(caplog, tmp_path, capsys,
                                                                            make_sandbox, backend):
    # Every logger the run writes through, by name: a level set on one of them earlier in the
    # process (`kiln demo` quiets kopf's) would otherwise drop its records before the capture.
    for name in (None, "kopf", "kiln", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb, \
            _watching(sb, backend) as (stored, watched):
        sb.add_namespace(NS)
        await sb.add_secret(NS, CREDENTIALS, SECRETS)
        await sb.start_operator()
        sb.start_kubelet()
        for manifest in _services():
            await sb.create(manifest)

        def ready(name):
            svc = sb.get("llmservices", name, NS)
            return svc is not None and is_true((svc.get("status") or {}).get("conditions", []), "Ready")
        await sb.wait_for(lambda: ready("mistral-7b") and ready("from-s3"), timeout=30, what="both Ready")

        # The credentials reach the build only by reference.
        for job in sb.objects("jobs"):
            env = job["spec"]["template"]["spec"]["containers"][0]["env"]
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
            assert set(SECRETS) & set(refs), job["metadata"]["name"]
            assert all(ref["name"] == CREDENTIALS for ref in refs.values())

        await sb.wait_for(lambda: {"BuildStarted", "BuildSucceeded"} <= {
            e.get("reason") for e in sb.objects("events")}, what="the build Events")
        metrics = generate_latest(sb.operator_context.telemetry.registry).decode()
    assert stored and _leaks(json.dumps(stored)) == []
    assert _leaks(json.dumps(watched)) == []
    assert _leaks(metrics) == []
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert len(caplog.records) > 20 and _leaks(logged) == []

    capsys.readouterr()
    for index, manifest in enumerate(_services()):
        path = tmp_path / f"{index}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        assert kiln_main(["render", "-f", str(path)]) == 0
    assert _leaks(capsys.readouterr().out) == []
