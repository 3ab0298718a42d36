"""Engines shared by many services, and what services wait on outside their spec.

- Services that want the same engine start one build: one Job, one BuildStarted Event, one
  count in kiln_engine_builds_total{result="started"}.
- A service stalled on a missing Secret serves within seconds of its creation, not at the
  next resync.
"""

from __future__ import annotations

import asyncio
import copy

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kiln.decide.conditions import get_condition, is_true

from ..conftest import ROOT

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())


def _named(manifest, name):
    manifest = copy.deepcopy(manifest)
    manifest["metadata"] = {"name": name, "namespace": NS}
    return manifest


def _ready(sb, name):
    svc = sb.get("llmservices", name, NS)
    return svc is not None and is_true((svc.get("status") or {}).get("conditions", []), "Ready")


def _builds_started(sb):
    text = generate_latest(sb.operator_context.telemetry.registry).decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "kiln_engine_builds_total" and sample.labels.get("result") == "started")


async def test_many_services_on_one_engine_start_one_build(make_sandbox):
    async with make_sandbox(build_seconds=1.0, start_seconds=0.1, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        sb.start_kubelet()
        names = [f"svc-{i}" for i in range(12)]
        await asyncio.gather(*(sb.create(_named(MISTRAL, name)) for name in names))
        await sb.wait_for(lambda: all(_ready(sb, name) for name in names), timeout=60,
                          what="every service Ready")
        started = [e for e in sb.objects("events") if e.get("reason") == "BuildStarted"]
        assert len(started) == 1, [e["involvedObject"]["name"] for e in started]
        assert len([t for t, _ in sb.events("jobs") if t == "ADDED"]) == 1
        assert _builds_started(sb) == 1
        assert sb.operator_error is None


async def test_a_secret_created_after_its_service_is_read_within_seconds(make_sandbox):
    """Secrets are not watched (the operator reads them by name only); a service waiting for
    one reads it again after seconds, where the resync would take 30 s or more."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.5) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        sb.start_kubelet()
        manifest = _named(MISTRAL, "late-secret")
        manifest["spec"]["model"]["credentials"] = {"secretName": "hf-token"}
        await sb.create(manifest)

        def stalled():
            svc = sb.get("llmservices", "late-secret", NS)
            condition = svc and get_condition(svc.get("status", {}).get("conditions", []), "Stalled")
            return condition and condition["status"] == "True" and condition["reason"] == "MissingDependency"
        await sb.wait_for(stalled, what="stalled on the Secret")
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        await sb.wait_for(lambda: _ready(sb, "late-secret"), timeout=10, what="Ready soon after")
        assert sb.operator_error is None
