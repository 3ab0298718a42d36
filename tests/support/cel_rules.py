"""Evaluate a CRD's CEL ``x-kubernetes-validations`` on an object, as the API server does on
create: defaults from the schema first, then every rule on every node present. Transition
rules (``oldSelf``) need an old object and are skipped. The evaluator is cel-python (Google's
CEL spec in pure Python); the functions Kiln's rules use (``size``, ``matches``, ``contains``,
``startsWith``, ``in``, ``type``, the ternary) are all in the CEL standard library."""

from __future__ import annotations

import copy
import functools
import sys
from typing import Any

import celpy
import jsonschema

__all__ = ["with_defaults", "violations", "without_nulls", "refusal"]


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in, recursively (structural defaulting)."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for name, prop in (schema.get("properties") or {}).items():
        if name not in out and "default" in prop:
            out[name] = copy.deepcopy(prop["default"])
        if name in out:
            out[name] = with_defaults(prop, out[name])
    return out


@functools.cache
def _program(rule: str) -> Any:
    # celpy.Environment raises the interpreter's recursion limit for deep expressions; Kiln's
    # rules are shallow, and a changed limit upsets hypothesis: put it back.
    limit = sys.getrecursionlimit()
    try:
        env = celpy.Environment()
        return env.program(env.compile(rule))
    finally:
        sys.setrecursionlimit(limit)


def violations(schema: dict[str, Any], obj: Any) -> list[str]:
    """The messages of the rules ``obj`` breaks (after defaulting), outermost first."""
    found: list[str] = []

    def walk(node: dict[str, Any], value: Any) -> None:
        for rule in node.get("x-kubernetes-validations") or []:
            if "oldSelf" in rule["rule"]:
                continue
            result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
            if isinstance(result, Exception) or not bool(result):
                found.append(rule.get("message") or rule["rule"])
        if isinstance(value, dict):
            for name, prop in (node.get("properties") or {}).items():
                if name in value:
                    walk(prop, value[name])

    walk(schema, with_defaults(schema, obj))
    return found


def without_nulls(value: Any) -> Any:
    """What the API server keeps of a custom resource: nulls in fields that are not
    ``nullable`` are pruned before defaulting (Kubernetes docs, "Defaulting and Nullable" in
    custom-resource-definitions); Kiln's schema marks none nullable."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def refusal(schema: dict[str, Any], obj: Any, types: bool = True) -> str | None:
    """Why the API server would refuse ``obj`` on create (schema, then CEL rules), or None;
    ``types=False`` leaves out the schema's type checks."""
    obj = without_nulls(obj)
    # OpenAPI v3.0 schemas use draft-4 semantics (boolean exclusiveMinimum).
    for error in jsonschema.Draft4Validator(schema).iter_errors(obj):
        if types or error.validator != "type":
            return error.message[:200]
    try:
        return (violations(schema, obj) or [None])[0]
    except Exception as error:  # a rule on a value of the wrong type: the schema refuses it
        return None if not types else str(error)[:200]
