"""Turn pydantic validation errors into the one-line, field-path messages users see."""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import ValidationError

from ..errors import SpecInvalid
from .limits import SERVICE_NAME_PATTERN
from .llmservice import LLMServiceSpec

_NAMES_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9.]*: ")

__all__ = ["parse_service_spec", "parse_service_manifest", "describe_error", "check_service_name"]


def describe_error(error: ValidationError, prefix: str) -> str:
    """``spec.gpu.perNode: Input should be greater than or equal to 1 (got 0)``."""
    first = error.errors(include_url=False)[0]
    path = ".".join([prefix, *(_part(part) for part in first["loc"])])
    message = first["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field is missing"
    elif "input" in first and first["type"] not in ("value_error", "model_type"):
        message = f"{message} (got {quote(first['input'])})"
    # A model-level validator reports on the model itself; its message already names the field.
    if first["type"] == "value_error" and _NAMES_FIELD.match(message):
        return f"{path}.{message}"
    return f"{path}: {message}"


_JSON_TYPES = {"integer": "an integer", "number": "a number", "string": "a string",
               "boolean": "a boolean", "object": "an object", "array": "a list"}


def _as_the_api_server_types(value: Any, schema: dict[str, Any], path: str) -> Any:
    """``value`` with the API server's structural typing applied before pydantic's lax one:
    a null where the schema has a default is dropped (the API server defaults it), and a value
    of the wrong JSON type is refused (pydantic would take ``true`` or ``"2"`` as an integer)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties") or {}
        checked = {}
        for key, item in value.items():
            if key not in properties:
                checked[key] = item  # unknown fields: pydantic names them
            elif item is None and "default" in properties[key]:
                continue
            else:
                checked[key] = _as_the_api_server_types(item, properties[key], f"{path}.{key}")
        return checked
    if value is None:
        return value  # pydantic says what is missing
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise SpecInvalid(f"{path}: must be an integer or a string (got {quote(value)})")
        return value
    expected = schema.get("type")
    fits = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
            "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list)}
    if expected in fits and not fits[expected](value):
        raise SpecInvalid(f"{path}: must be {_JSON_TYPES[expected]} (got {quote(value)})")
    return value


@functools.cache
def _spec_schema() -> dict[str, Any]:
    from .crd import openapi_schema  # crd builds on this module's models

    return openapi_schema(LLMServiceSpec)


def parse_service_spec(raw: Any) -> LLMServiceSpec:
    """Validate an LLMService ``spec``; raise SpecInvalid with one field-path message."""
    if not isinstance(raw, dict):
        raise SpecInvalid("spec: must be an object")
    raw = _as_the_api_server_types(raw, _spec_schema(), "spec")
    try:
        return LLMServiceSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecInvalid(describe_error(error, "spec")) from None


def parse_service_manifest(manifest: Any) -> tuple[dict[str, Any], LLMServiceSpec]:
    """Check the envelope of an LLMService manifest and return (metadata, spec)."""
    from .common import API_VERSION

    if not isinstance(manifest, dict):
        raise SpecInvalid("manifest: must be a YAML mapping")
    if manifest.get("apiVersion") != API_VERSION:
        raise SpecInvalid(f"apiVersion: must be {API_VERSION} (got {quote(manifest.get('apiVersion'))})")
    if manifest.get("kind") != "LLMService":
        raise SpecInvalid(f"kind: must be LLMService (got {quote(manifest.get('kind'))})")
    metadata = manifest.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise SpecInvalid("metadata.name: required field is missing")
    check_service_name(metadata["name"])
    namespace = metadata.get("namespace", "default")
    if not isinstance(namespace, str) or not _is_dns_label(namespace):
        raise SpecInvalid(f"metadata.namespace: {quote(namespace)} must be a DNS label")
    unknown = set(manifest) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if unknown:
        raise SpecInvalid(f"{_part(sorted(map(str, unknown))[0])}: unknown field")
    return metadata, parse_service_spec(manifest.get("spec"))


def check_service_name(name: Any) -> None:
    """The CRD's rule on metadata.name, in Python: a DNS-1035 label, since it names the
    service's Kubernetes Service and is the value of its children's instance label."""
    if not isinstance(name, str) or len(name) > 63 or not re.fullmatch(SERVICE_NAME_PATTERN, name):
        raise SpecInvalid(f"metadata.name: {quote(name)} must be a DNS-1035 label: at most 63 "
                          "lowercase letters, digits and '-', starting with a letter (it names "
                          "the service's Kubernetes Service)")


def _part(key: Any) -> str:
    """One step of a field path, as typed; a hostile key is cut and kept on one line."""
    text = " ".join(str(key).split())
    return text if len(text) <= 60 else text[:57] + "..."


def quote(value: Any, limit: int = 60) -> str:
    """A user's value in a message: its repr, cut to ``limit`` characters, on one line."""
    text = repr(value) if not isinstance(value, (dict, list)) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_dns_label(value: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value))
