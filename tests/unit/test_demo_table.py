"""The demo's `kubectl get llms`: the CRD's printer columns, as kubectl prints them."""

from __future__ import annotations

import datetime
import re

import pytest

from kiln.api.crd import crds
from kiln.demo.table import human_duration, printer_table

NOW = datetime.datetime(2026, 1, 1, 0, 21, 30, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("seconds", "shown"), [
    (5, "5s"), (119, "119s"), (120, "2m"), (330, "5m30s"), (1290, "21m"), (3 * 3600 + 600, "3h10m"),
    (30 * 3600, "30h"), (5 * 86400, "5d")])
def test_age_reads_as_kubectl_prints_it(seconds, shown):
    assert human_duration(seconds) == shown


def test_every_printer_column_from_the_crd_and_blank_where_the_object_has_nothing():
    crd = next(c for c in crds() if c["spec"]["names"]["kind"] == "LLMService")
    service = {
        "metadata": {"name": "llama-8b", "namespace": "llm", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"gpus": 1, "precision": "fp8"},
        "status": {"conditions": [{"type": "Fits", "status": "True"},
                                  {"type": "Ready", "status": "True", "reason": "ReplicasReady"}],
                   "readyReplicas": 2, "tpPp": "1x1"},
    }
    header, row = printer_table(crd, [service], NOW).splitlines()
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    # Every column kubectl shows without -o wide (priority 0), in the CRD's order.
    assert header.split() == ["NAMESPACE", "NAME"] + [c["name"].upper() for c in columns
                                                      if not c.get("priority")]
    assert "URL" not in header and "DESIRED" not in header  # -o wide only
    # No kvCacheUtilization yet: KV-UTIL stays blank, the columns stay aligned.
    starts = {m.group(): m.start() for m in re.finditer(r"\S+", header)}
    cells = {name: row[at:].split()[0] for name, at in starts.items() if name != "KV-UTIL"}
    assert cells == {"NAMESPACE": "llm", "NAME": "llama-8b", "READY": "True", "REASON": "ReplicasReady",
                     "REPLICAS": "2", "GPUS": "1", "PRECISION": "fp8", "TPXPP": "1x1",
                     "AGE": "21m"}
    assert row[starts["KV-UTIL"]:starts["AGE"]].strip() == ""
    single = printer_table(crd, [service], NOW, all_namespaces=False)
    assert single.splitlines()[0].startswith("NAME ")
