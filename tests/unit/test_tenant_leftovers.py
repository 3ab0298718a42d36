"""What a tenant's services leave behind in the operator: once a service is deleted, none of
its metric series; and a credentials Secret whose token is not text is refused naming the
key, not a crash retried forever."""

from __future__ import annotations

import base64

import pytest

from kiln.controller.credentials import read_credentials
from kiln.controller.telemetry import Telemetry
from kiln.errors import SpecInvalid


def _series(telemetry: Telemetry, service: str) -> list[str]:
    return [sample.name for metric in telemetry.registry.collect() for sample in metric.samples
            if sample.labels.get("service") == service]


def test_a_deleted_service_leaves_no_series_behind():
    """A tenant creating and deleting services must not grow the operator's /metrics: the
    autoscaler's decision counter was kept per service for ever."""
    telemetry = Telemetry()
    for direction in ("up", "down", "hold"):
        telemetry.decisions.labels("llm", "svc", direction).inc()
    telemetry.correction.labels("llm", "svc").set(1.1)
    assert _series(telemetry, "svc")
    telemetry.forget_service("llm", "svc", "u-1")
    assert _series(telemetry, "svc") == []


class _Secrets:
    def __init__(self, data):
        self.data = data

    async def get(self, api_version, kind, name, namespace=None):
        return {"metadata": {"name": name}, "data": self.data}


async def test_a_token_that_is_not_text_is_refused_naming_the_key():
    data = {"HF_TOKEN": base64.b64encode(b"hf_\xff\xfe").decode()}
    with pytest.raises(SpecInvalid, match="^spec.model.credentials.secretName: Secret llm/hf-token: "
                                          "HF_TOKEN is not UTF-8 text"):
        await read_credentials(_Secrets(data), "llm", "hf-token")  # type: ignore[arg-type]


async def test_a_text_token_is_read():
    data = {"HF_TOKEN": base64.b64encode(b"hf_abc").decode()}
    credentials = await read_credentials(_Secrets(data), "llm", "hf-token")  # type: ignore[arg-type]
    assert credentials.token == "hf_abc" and credentials.found
