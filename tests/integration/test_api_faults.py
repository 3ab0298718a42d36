"""Conflicts and outages: the operator retries with backoff and never crashes.

The operator's server-side applies are answered 409 Conflict, then every request 503 for a
while: by the emulator itself (tests/support/faults.py), or on the real control plane by a
proxy in front of the API server that only the operator talks to (tests/support/proxy.py).
The service must still end Ready with one build Job, the operator must still be running, and
each failed pass must be counted in ``kiln_reconcile_errors_total`` and posted once as a
ReconcileError Event.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy

import yaml

from kiln.decide.conditions import is_true
from kiln.demo.sandbox import Sandbox

from ..conftest import ROOT
from ..support.faults import FlakyEmulator
from ..support.proxy import FaultProxy
from ..support.real_cluster import RealSandbox

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())


def _ready(sb):
    svc = sb.get("llmservices", "mistral-7b", NS)
    return svc is not None and is_true((svc.get("status") or {}).get("conditions", []), "Ready")


def _errors(sb):
    counter = sb.operator_context.telemetry.reconcile_errors
    return sum(sample.value for metric in counter.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


@contextlib.asynccontextmanager
async def _flaky(backend, request, **options):
    """``(sandbox, faults)``: ``faults`` has ``conflicts``, ``outage`` and ``refused``."""
    if backend == "emulator":
        emulator = FlakyEmulator()
        async with Sandbox(emulator=emulator, **options) as sb:
            yield sb, emulator
        return
    plane = request.getfixturevalue("control_plane")
    with FaultProxy(plane.server, plane.ca_file) as proxy:
        async with RealSandbox(plane, operator_url=proxy.url, **options) as sb:
            yield sb, proxy


def _jobs_created(sb, faults):
    if isinstance(faults, FaultProxy):
        return [name for plural, name in faults.created if plural == "jobs"]
    return [o["metadata"]["name"] for t, o in sb.events("jobs") if t == "ADDED"]


async def test_conflicts_and_an_outage_are_retried_until_ready(backend, request):
    async with _flaky(backend, request, build_seconds=0.2, start_seconds=0.1, retry_delay=0.3) as (sb, emulator):
        sb.add_namespace(NS)
        emulator.conflicts = {"serviceaccounts": 2, "deployments": 2}  # build Jobs are created, not applied
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(copy.deepcopy(MISTRAL))
        await sb.wait_for(lambda: sb.objects("deployments"), what="the Deployment, after the conflicts")
        assert [code for code, _, _ in emulator.refused] == [409] * 4

        emulator.outage = True  # mid-rollout: every read and write of the operator fails
        await sb.wait_for(lambda: len(emulator.refused) >= 10, what="requests refused in the outage")
        await asyncio.sleep(1.0)
        assert sb.operator_error is None, "the operator survived the outage"
        emulator.outage = False

        await sb.wait_for(lambda: _ready(sb), timeout=30, what="Ready after the outage")
        assert sb.operator_error is None
        assert len(_jobs_created(sb, emulator)) == 1, "one build Job"
        assert _errors(sb) >= 2
        reasons = [e.get("reason") for e in sb.objects("events")]
        assert "ReconcileError" in reasons
        message = next(e["message"] for e in sb.objects("events") if e.get("reason") == "ReconcileError")
        assert message.startswith("ApiException: (409)") or "(503)" in message
        assert "Traceback" not in message and len(message) < 400
