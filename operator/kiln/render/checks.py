"""The API server's rules on names, labels and size, checked on every rendered object.

The LLMService schema refuses the inputs that would break these rules, so a failure here is a
rule the schema missed: the service stalls naming the object instead of the operator writing
something the API server refuses, retrying it forever. The rules are Kubernetes' own
(k8s.io/apimachinery pkg/util/validation/validation.go: IsDNS1035Label, IsDNS1123Subdomain,
IsQualifiedName, IsValidLabelValue; a Service's name is a DNS-1035 label,
pkg/apis/core/validation/validation.go ValidateServiceName).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ..errors import SpecInvalid

__all__ = ["check_objects", "MAX_OBJECT_BYTES"]

# Below etcd's default request limit of 1.5 MiB (etcd server/embed/config.go,
# DefaultMaxRequestBytes), leaving room for the fields the API server adds.
MAX_OBJECT_BYTES = 1024 * 1024

_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# Kinds whose names are DNS-1035 labels rather than DNS-1123 subdomains.
_LABEL_NAMED = {"Service"}


def _name_problem(kind: str, name: Any) -> str | None:
    if not isinstance(name, str):
        return "is missing"
    if kind in _LABEL_NAMED:
        if len(name) > 63 or not _DNS1035_LABEL.fullmatch(name):
            return "is not a DNS-1035 label (at most 63 lowercase letters, digits and '-', " \
                   "starting with a letter)"
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        return "is not a DNS-1123 subdomain"
    return None


def _label_problem(key: str, value: Any) -> str | None:
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix))) \
            or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return f"label key {key[:80]!r} is not a qualified name"
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        return f"label {key} has a value that is not a label value (at most 63 characters)"
    return None


def _labels(obj: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield obj.get("metadata", {}).get("labels") or {}
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    yield (template.get("metadata") or {}).get("labels") or {}
    for key in ("leaderTemplate", "workerTemplate"):
        inner = (spec.get("leaderWorkerTemplate") or {}).get(key) or {}
        yield (inner.get("metadata") or {}).get("labels") or {}


def check_objects(objects: Iterable[dict[str, Any]]) -> None:
    """Raise SpecInvalid naming the first object the API server would refuse for its name,
    labels or size."""
    for obj in objects:
        kind, meta = obj.get("kind", "?"), obj.get("metadata") or {}
        name = meta.get("name")
        where = f"{kind} {str(name)[:80]!r}"
        if (problem := _name_problem(kind, name)) is not None:
            raise SpecInvalid(f"metadata.name: the {where} it would create {problem}")
        for labels in _labels(obj):
            for key, value in labels.items():
                if (problem := _label_problem(key, value)) is not None:
                    raise SpecInvalid(f"metadata.name: the {where} it would create has a {problem}")
        size = len(json.dumps(obj, separators=(",", ":")))
        if size > MAX_OBJECT_BYTES:
            raise SpecInvalid(f"spec: the {where} it would create is {size} bytes, more than "
                              f"the {MAX_OBJECT_BYTES} an object may hold")
