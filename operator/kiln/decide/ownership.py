"""Kiln writes only objects it owns: the pure checks on what the API server holds
(controller/ownership.py reads it, and follows a pod's chain of controllers)."""

from __future__ import annotations

from typing import Any

from ..api import API_VERSION, Reason
from ..errors import SpecInvalid
from ..render.meta import LABEL_ENGINE, owner_reference
from .conditions import job_state

__all__ = ["controller_of", "conflict", "check_controlled", "check_engine_job", "owned_by_service",
           "other_owners", "owned_by_services_alone", "join_owners", "leave_owners", "let_go"]


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


def _owners(obj: dict[str, Any]) -> list[dict[str, Any]]:
    refs = (obj.get("metadata") or {}).get("ownerReferences")
    return [ref for ref in refs if isinstance(ref, dict)] if isinstance(refs, list) else []


def owned_by_service(obj: dict[str, Any], uid: str | None) -> bool:
    """Whether LLMService ``uid`` is one of ``obj``'s owners."""
    return uid is not None and any(ref.get("uid") == uid for ref in _owners(obj))


def other_owners(obj: dict[str, Any], uid: str | None) -> list[dict[str, Any]]:
    """``obj``'s owner references but LLMService ``uid``'s."""
    return [ref for ref in _owners(obj) if ref.get("uid") != uid]


def owned_by_services_alone(obj: dict[str, Any]) -> bool:
    """Whether ``obj`` has owners and every one is an LLMService (a build Job Kiln made)."""
    refs = _owners(obj)
    return bool(refs) and all(ref.get("apiVersion") == API_VERSION and ref.get("kind") == "LLMService"
                              for ref in refs)


def check_engine_job(live: dict[str, Any] | None, desired: dict[str, Any], owner: str) -> None:
    """A build Job is shared by every service that waits on its engine: each is one of its
    owners (the one that started it its controller, until it is deleted), so that the
    garbage collector deletes it only once none of them is left. Every owner must be an
    LLMService, and the Job must build this engine."""
    if live is None:
        return
    if not owned_by_services_alone(live):
        raise conflict(desired, owner, "is not owned by LLMServices alone", engine_named=True)
    wanted = desired["metadata"]["labels"][LABEL_ENGINE]
    if ((live.get("metadata") or {}).get("labels") or {}).get(LABEL_ENGINE, wanted) != wanted:
        raise conflict(desired, owner, "builds another engine", engine_named=True)


def join_owners(job: dict[str, Any], instance: str, uid: str) -> list[dict[str, Any]]:
    """The RFC 6902 patch that makes LLMService ``instance`` one more owner of ``job`` (not
    its controller), onto the Job read: concurrent joins each append their own."""
    join = {"op": "add", "path": "/metadata/ownerReferences/-", "value": owner_reference(instance, uid, controller=False)}
    read = (job.get("metadata") or {}).get("uid")
    return [{"op": "test", "path": "/metadata/uid", "value": read}, join] if read else [join]


def leave_owners(job: dict[str, Any], uid: str | None) -> list[dict[str, Any]] | None:
    """The patch that takes LLMService ``uid`` off ``job``'s owners, if it is one: refused
    (422) if the list moved since it was read, and decided again."""
    refs = (job.get("metadata") or {}).get("ownerReferences") or []
    index = next((i for i, ref in enumerate(refs) if isinstance(ref, dict) and ref.get("uid") == uid), None)
    if uid is None or index is None:
        return None
    return [{"op": "test", "path": f"/metadata/ownerReferences/{index}/uid", "value": uid},
            {"op": "remove", "path": f"/metadata/ownerReferences/{index}"}]


def let_go(job: dict[str, Any] | None, uid: str | None, wanted: bool) -> tuple[str, list[dict[str, Any]] | None] | None:
    """What LLMService ``uid``, which no longer wants the engine ``job`` builds, does with it,
    as read: ``("leave", patch)`` while the Job has another owner, ``("delete", None)`` when
    it is the Job's only owner and no other service names the engine (``wanted``), None when
    it has nothing to do: the Job is gone or finished, is not its own (a Job it does not own
    is never deleted, whatever its name), or another service names the engine and has not
    joined its owners yet."""
    if job is None or uid is None or not owned_by_service(job, uid):
        return None
    if job_state(job) != "Running":
        return None
    if other_owners(job, uid):
        return "leave", leave_owners(job, uid)
    return None if wanted else ("delete", None)
