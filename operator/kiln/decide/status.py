"""An LLMService's status as the typed model the CRD is generated from, and the kstatus rules.

``Stalled`` and ``Reconciling`` are abnormal-true; ``Ready`` is derived from them in one place
(:func:`conclude`), the way KServe derives ``Ready`` from a condition set. A condition's
``lastTransitionTime`` moves only when its status flips.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ..api import ConditionType, LLMServiceStatus, Reason
from ..api.llmservice import Condition
from .conditions import set_condition as set_dict_condition

__all__ = ["parse_status", "status_wire", "set_condition", "get_condition", "is_true", "conclude",
           "forbidden"]

# Status keys Kiln writes, as they are spelt on the wire (other writers' keys are not Kiln's).
_FIELDS = {field.alias or name: name for name, field in LLMServiceStatus.model_fields.items()}


def parse_status(raw: Mapping[str, Any] | None) -> LLMServiceStatus:
    """The status the API server holds, typed; what is not Kiln's, or no longer parses, is
    left out (the reconcile writes it afresh).

    A key this operator does not know, at any depth, is skipped, not the field that holds it:
    a newer operator's status (a rollback, with the newer CRD still installed) keeps its
    inventory, engine and generation, and, as a merge patch never removes a key it does not
    name, the unknown one would otherwise cost the same fields at every read. A field whose
    value does not parse is left out alone."""
    known = {key: value for key, value in (raw or {}).items() if key in _FIELDS}
    try:
        return LLMServiceStatus.model_validate(known)
    except ValidationError as error:
        known = _without_unknown_keys(known, error)
    try:
        return LLMServiceStatus.model_validate(known)
    except ValidationError:
        return LLMServiceStatus.model_validate({key: value for key, value in known.items() if _valid(key, value)})


def _without_unknown_keys(status: dict[str, Any], error: ValidationError) -> dict[str, Any]:
    """``status`` without the keys ``error`` says the models do not have (a copy)."""
    status = copy.deepcopy(status)
    for detail in error.errors(include_url=False):
        if detail["type"] != "extra_forbidden" or not detail["loc"]:
            continue
        *path, last = detail["loc"]
        node: Any = status
        for step in path:
            if isinstance(node, dict):
                node = node.get(step)
            elif isinstance(node, list) and isinstance(step, int) and step < len(node):
                node = node[step]
            else:
                node = None
        if isinstance(node, dict):
            node.pop(last, None)
    return status


def _valid(key: str, value: Any) -> bool:
    try:
        LLMServiceStatus.model_validate({key: value})
    except ValidationError:
        return False
    return True


def status_wire(status: LLMServiceStatus) -> dict[str, Any]:
    """The camelCase form for a merge patch: every top-level field, None included, so that a
    field no longer set (``endpoints`` after a mode change) is removed."""
    wire = status.wire()
    return {alias: wire.get(alias) for alias in _FIELDS}


def get_condition(status: LLMServiceStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def is_true(status: LLMServiceStatus, type_: str) -> bool:
    condition = get_condition(status, type_)
    return condition is not None and condition.status == "True"


def set_condition(status: LLMServiceStatus, type_: ConditionType, value: bool | None, reason: str,
                  message: str, now: str, generation: int | None = None) -> None:
    """Set ``type_`` by the one transition rule (:func:`kiln.decide.conditions.set_condition`)."""
    wire = [condition.wire() for condition in status.conditions]
    status.conditions = [Condition.model_validate(condition) for condition in set_dict_condition(
        wire, type_.value, value, reason, message, now, generation)]


def conclude(status: LLMServiceStatus, *, stalled: bool, reconciling: bool, reason: Reason,
             message: str, now: str, generation: int | None = None) -> None:
    """``Stalled`` and ``Reconciling`` (the abnormal one carries the message), and ``Ready``
    derived from them: True exactly when neither is."""
    set_condition(status, ConditionType.STALLED, stalled, reason.value, message if stalled else "",
                  now, generation)
    set_condition(status, ConditionType.RECONCILING, reconciling, reason.value,
                  message if reconciling else "", now, generation)
    set_condition(status, ConditionType.READY, not (stalled or reconciling), reason.value, message,
                  now, generation)


def forbidden(status: LLMServiceStatus, said: str, now: str) -> None:
    """Stalled with reason ``Forbidden``, for a 403 from the API server: retrying cannot help
    until someone grants the verb."""
    message = (f"the API server refused the operator: {said}; grant the verb to the operator's "
               "ServiceAccount (the chart's ClusterRole has every rule it needs)")
    conclude(status, stalled=True, reconciling=False, reason=Reason.FORBIDDEN, message=message, now=now)
