"""Evaluate a CRD's CEL ``x-kubernetes-validations`` on an object, as the API server does on
create: defaults from the schema first, then every rule on every node present. Transition
rules (``oldSelf``) need an old object and are skipped. The evaluator is cel-python (Google's
CEL spec in pure Python); the functions Kiln's rules use (``size``, ``matches``, ``contains``,
``startsWith``, ``in``, ``type``, the ternary) are all in the CEL standard library."""

from __future__ import annotations

import copy
import functools
from typing import Any

import celpy

__all__ = ["with_defaults", "violations"]


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
    env = celpy.Environment()
    return env.program(env.compile(rule))


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
