"""Kiln writes only objects it owns: the pure checks on what the API server holds
(controller/ownership.py reads it, and follows a pod's chain of controllers)."""

from __future__ import annotations

from typing import Any

from ..api import API_VERSION, Reason
from ..errors import SpecInvalid
from ..render.meta import LABEL_ENGINE

__all__ = ["controller_of", "conflict", "check_controlled", "check_engine_job"]


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The owner reference marked ``controller: true``, if any (at most one may be)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def _where(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta.get("name"))


def conflict(obj: dict[str, Any], owner: str, why: str, engine_named: bool = False) -> SpecInvalid:
    """A ResourceConflict saying what to do: an object named after the service goes away with
    another name for the service, or with the object; one named after the engine (its build
    Job, its LLMEngine) only with the object, as the engine's name comes from what it is built
    from, not from the service."""
    if engine_named:
        advice = (f"Remove that {obj['kind']} (its name is the engine's, made from the model, precision "
                  "and engine settings), and Kiln makes its own")
    else:
        advice = f"Give LLMService {owner} another name, or remove that {obj['kind']}"
    return SpecInvalid(
        f"{obj['kind']} {_where(obj)} already exists and {why}; Kiln does not take over objects "
        f"it did not create. {advice}", reason=Reason.RESOURCE_CONFLICT.value)


def check_controlled(live: dict[str, Any] | None, desired: dict[str, Any], owner_uid: str | None,
                     owner: str) -> None:
    """Raise a ResourceConflict unless ``live`` is absent or controlled by ``owner_uid``."""
    if live is None or owner_uid is None:
        return
    ref = controller_of(live)
    if ref is None:
        raise conflict(desired, owner, "has no controller")
    if ref.get("uid") != owner_uid:
        raise conflict(desired, owner, f"is controlled by {ref.get('kind')} {ref.get('name')}")


def check_engine_job(live: dict[str, Any] | None, desired: dict[str, Any], owner: str) -> None:
    """A build Job is shared by every service that wants its engine, so any LLMService may
    control it; but it must be an LLMService's, and build this engine."""
    if live is None:
        return
    ref = controller_of(live) or {}
    if ref.get("apiVersion") != API_VERSION or ref.get("kind") != "LLMService":
        raise conflict(desired, owner, "is not controlled by an LLMService", engine_named=True)
    wanted = desired["metadata"]["labels"][LABEL_ENGINE]
    if ((live.get("metadata") or {}).get("labels") or {}).get(LABEL_ENGINE, wanted) != wanted:
        raise conflict(desired, owner, "builds another engine", engine_named=True)
