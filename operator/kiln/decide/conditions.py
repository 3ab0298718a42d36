"""kstatus conditions: one pure function that sets a condition and moves its
``lastTransitionTime`` only when its status flips."""

from __future__ import annotations

from typing import Any

__all__ = ["set_condition", "get_condition", "is_true", "one_line", "job_state"]


def job_state(job: dict[str, Any]) -> str:
    """A Job's ``Complete`` or ``Failed`` condition if one is true, else "Running"."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return "Running"


def one_line(text: Any, limit: int) -> str:
    """``text`` as a condition's message may hold what someone else wrote (an Event, another
    controller's condition, an API server's answer): one line of printable text (no control
    characters or bidirectional overrides), at most ``limit`` characters."""
    return "".join(ch for ch in " ".join(str(text or "").split()) if ch.isprintable())[:limit]


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return bool(condition and condition.get("status") == "True")


def set_condition(conditions: list[dict[str, Any]], type_: str, status: bool | None, reason: str,
                  message: str, now: str, generation: int | None = None) -> list[dict[str, Any]]:
    """A new list with ``type_`` set; order is kept, a new type goes last."""
    status_text = "Unknown" if status is None else ("True" if status else "False")
    previous = get_condition(conditions, type_)
    changed = previous is None or previous.get("status") != status_text
    condition = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now if changed else previous["lastTransitionTime"],  # type: ignore[index]
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    if previous is None:
        return [*conditions, condition]
    return [condition if c.get("type") == type_ else c for c in conditions]
