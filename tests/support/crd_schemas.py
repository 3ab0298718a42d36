"""Validate objects of third-party kinds against the CRD schemas copied in ``schemas/``."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"


@functools.cache
def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in SCHEMAS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found


def has_schema(obj: dict[str, Any]) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in _schemas()


def validate(obj: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``obj`` matches its kind's CRD schema.

    The schema itself is not checked against the JSON Schema metaschema: CRD patterns are Go
    regular expressions (the PrometheusRule CRD has ``^(?i)(abort|warn)?$``, which Python's
    ``re`` rejects), and the API server, not Python, compiles them."""
    schema = _schemas()[(obj["apiVersion"], obj["kind"])]
    jsonschema.validators.validator_for(schema)(schema).validate(obj)
