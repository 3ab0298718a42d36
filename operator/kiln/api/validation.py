"""Turn pydantic validation errors into the one-line, field-path messages users see."""

from __future__ import annotations

import functools
import difflib
import json
import re
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from ..errors import SpecInvalid
from .limits import SERVICE_NAME_PATTERN
from .llmservice import LLMServiceSpec

_NAMES_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9.]*: ")

__all__ = ["parse_service_spec", "parse_service_manifest", "describe_error", "check_service_name"]


_SOURCE_FORMS = "must be hf://org/name, s3://bucket/prefix or pvc://claim/path"
_CALIBRATION_FORMS = ("must be s3://bucket/prefix or pvc://claim/path (a calibration set is "
                      "read from the cluster's storage, not the Hub)")
_MAX_PROBLEMS = 6
_MAX_LINE = 320


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The wire names of the fields of the model found at ``loc`` inside ``model``."""
    for part in loc:
        field = next((f for name, f in model.model_fields.items()
                      if part in (name, f.alias)), None)
        if field is None:
            return []
        nested = [a for a in get_args(field.annotation) or (field.annotation,)
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return [f.alias or name for name, f in model.model_fields.items()]


def _union_member(part: Any) -> bool:
    """Whether a location part is the union member pydantic tried (``constrained-int``,
    ``literal['auto']``, ``function-after[...]``), not a field: no field name has these."""
    return isinstance(part, str) and ("[" in part or "-" in part or part in ("int", "str", "float", "bool"))


def _alternative(detail: Any) -> str:
    """What one member of a union wanted, in a few words."""
    ctx = detail.get("ctx") or {}
    kind = detail["type"]
    if kind == "literal_error":
        return str(ctx.get("expected", "a listed value"))
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": "at least", "greater_than": "more than", "less_than_equal": "at most",
                 "less_than": "less than"}[kind]
        return f"an integer of {bound} {next(iter(ctx.values()), '?')}"
    if kind.startswith("int_"):
        return "an integer"
    return str(detail["msg"]).removeprefix("Input should be ").lower()


def _merge_unions(details: list[Any]) -> list[Any]:
    """One problem per field for a value no member of a union takes: ``must be an integer or
    'auto'``, not one line per member named after pydantic's own types."""
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for detail in details:
        merged.setdefault(tuple(p for p in detail["loc"] if not _union_member(p)), []).append(detail)
    out = []
    for loc, group in merged.items():
        members = [d for d in group if len(d["loc"]) > len(loc)]
        if len(members) < 2:
            out.extend(group)
            continue
        wanted = " or ".join(dict.fromkeys(_alternative(d) for d in members))
        out.append({"type": "union", "loc": loc, "msg": f"must be {wanted}", "input": members[0].get("input")})
        out.extend(d for d in group if d not in members)
    return out


def _describe(detail: Any, prefix: str, model: type[BaseModel] | None) -> str:
    path = ".".join([prefix, *(_part(part) for part in detail["loc"])])
    message = detail["msg"]
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if detail["type"] == "extra_forbidden":
        message = "unknown field"
        known = _known_fields(model, tuple(detail["loc"][:-1])) if model else []
        close = difflib.get_close_matches(str(detail["loc"][-1]), known, n=1)
        if close:
            message += f" (did you mean {close[0]}?)"
    elif detail["type"] == "missing":
        message = "required field is missing"
    elif detail["type"] == "string_pattern_mismatch":
        # A long pattern is no help on one line: name the form instead.
        pattern = str((detail.get("ctx") or {}).get("pattern", ""))
        message = (_SOURCE_FORMS if path.endswith("model.source") else
                   _CALIBRATION_FORMS if path.endswith("model.calibration.source") else
                   f"must match {pattern}" if len(pattern) <= 60 else "is not in the accepted form")
        message = f"{message} (got {quote(detail['input'])})"
    elif "input" in detail and detail["type"] not in ("value_error", "model_type"):
        message = f"{message} (got {quote(detail['input'])})"
    # A model-level validator reports on the model itself; its message already names the field.
    if detail["type"] == "value_error" and _NAMES_FIELD.match(message):
        return f"{path}.{message}"
    return f"{path}: {message}"


def _as_the_api_server_types(value: Any, schema: dict[str, Any], path: str) -> Any:
    """``value`` with the API server's structural typing applied before pydantic's lax one:
    a null where the schema has a default is dropped (the API server defaults it), and an
    int-or-string field holding anything else is refused."""
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
    # Every other type is checked by pydantic's strict mode in parse_service_spec, which
    # reports all the problems at once.
    return value


@functools.cache
def _spec_schema() -> dict[str, Any]:
    from .crd import openapi_schema  # crd builds on this module's models

    return openapi_schema(LLMServiceSpec)


def describe_error(error: ValidationError, prefix: str, model: type[BaseModel] | None = None) -> str:
    """Every problem at once, unknown fields first (they often explain a missing one):
    ``spec.model.sourse: unknown field (did you mean source?); spec.model.source: required
    field is missing``. ``model`` (the validated model) enables the suggestions."""
    details = sorted(_merge_unions(error.errors(include_url=False)), key=lambda d: d["type"] != "extra_forbidden")
    problems = list(dict.fromkeys(_describe(d, prefix, model) for d in details))
    # One line a reader takes in: past a few problems, say how many more there are.
    shown = problems[:_MAX_PROBLEMS]
    while len(shown) > 1 and len("; ".join(shown)) > _MAX_LINE:
        shown.pop()
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more else "")


def parse_service_spec(raw: Any) -> LLMServiceSpec:
    """Validate an LLMService ``spec`` as the API server does (types strict: ``gpus: "2"``
    is refused), raising SpecInvalid with every problem, each naming its field."""
    if not isinstance(raw, dict):
        raise SpecInvalid("spec: must be an object")
    raw = _as_the_api_server_types(raw, _spec_schema(), "spec")
    try:
        # Through JSON, as the API server sees a manifest: enums are their strings there,
        # and strict mode refuses a string or a boolean where a number belongs.
        return LLMServiceSpec.model_validate_json(json.dumps(raw, default=str), strict=True)
    except ValidationError as error:
        raise SpecInvalid(describe_error(error, "spec", LLMServiceSpec)) from None


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
    namespace = metadata.get("namespace")
    if namespace in (None, ""):  # unset, as kubectl and the API server read a null or empty one
        namespace = "default"
        metadata = {**metadata, "namespace": namespace}
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
