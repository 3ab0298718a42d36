"""Names, labels, owner references and the spec-hash annotation shared by every object."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api import API_VERSION

__all__ = [
    "selector_terms",
    "MANAGED_BY",
    "FIELD_MANAGER",
    "SPEC_HASH_ANNOTATION",
    "ENGINE_KEY_ANNOTATION",
    "LABEL_NAME",
    "LABEL_INSTANCE",
    "LABEL_COMPONENT",
    "LABEL_MANAGED_BY",
    "LABEL_ENGINE",
    "LABEL_CACHE_NAMESPACE",
    "labels",
    "selector",
    "child_name",
    "NAME_DIGEST_HEX",
    "owned_by",
    "content_hash",
    "stamp",
]

MANAGED_BY = "kiln"
FIELD_MANAGER = "kiln"
SPEC_HASH_ANNOTATION = "kiln.dev/spec-hash"
ENGINE_KEY_ANNOTATION = "kiln.dev/engine-key"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_ENGINE = "kiln.dev/engine"
# On an LLMEngine: the namespace of the cache it lives in, whose services may reference it.
LABEL_CACHE_NAMESPACE = "kiln.dev/cache-namespace"
_MAX_NAME = 63


def labels(instance: str, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: "kiln",
        LABEL_INSTANCE: instance,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
    }


def selector(instance: str, component: str) -> dict[str, str]:
    """The stable subset of labels used in selectors (immutable on Deployments)."""
    return {LABEL_INSTANCE: instance, LABEL_COMPONENT: component}


def selector_string(instance: str, component: str) -> str:
    """The same selector as a label-selector string (``status.selector``, list calls)."""
    return ",".join(f"{k}={v}" for k, v in selector(instance, component).items())


def selector_terms(text: str) -> dict[str, str]:
    """The ``key=value`` terms of a label-selector string (the inverse of
    :func:`selector_string`); a term of another form is left out."""
    return dict(term.split("=", 1) for term in text.split(",") if "=" in term)


# Hex digits of sha256 in a shortened name: 64 bits, so that finding another service name
# with the same child name (a second preimage) is impractical; a collision is still caught
# as a conflict by the operator's ownership check, never a takeover.
NAME_DIGEST_HEX = 16


def child_name(base: str, suffix: str, limit: int = _MAX_NAME) -> str:
    """``{base}-{suffix}``, shortened with a hash so it fits ``limit`` characters."""
    name = f"{base}-{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:NAME_DIGEST_HEX]
    keep = limit - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-')}-{digest}-{suffix}"


def owner_reference(instance: str, uid: str, controller: bool = True) -> dict[str, Any]:
    """An owner reference to LLMService ``instance`` (UID ``uid``); ``controller``: the one
    owner that manages the object (a shared build Job has other owners besides, none of them
    its controller: decide/engine.py).

    Without ``blockOwnerDeletion``: where the OwnerReferencesPermissionEnforcement admission
    plugin runs (OpenShift enables it), setting it needs the right to set finalizers on the
    owner, which the chart does not grant (kubernetes/kubernetes,
    plugin/pkg/admission/gc/gc_admission.go: "cannot set blockOwnerDeletion if an
    ownerReference refers to a resource you can't set finalizers on"), and every create would
    be refused. It only makes a foreground deletion of the service wait for its children; the
    garbage collector deletes them all the same."""
    return {"apiVersion": API_VERSION, "kind": "LLMService", "name": instance, "uid": uid,
            "controller": controller}


def owned_by(instance: str, uid: str | None) -> dict[str, Any]:
    """The metadata that makes LLMService ``instance`` (UID ``uid``) the controller of an
    object, to merge into its ``metadata``; nothing without a UID (``kiln render`` has none)."""
    if not uid:
        return {}
    return {"ownerReferences": [owner_reference(instance, uid)]}


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """Add the spec-hash annotation: a hash of everything Kiln sets but status and annotations."""
    body = {k: v for k, v in obj.items() if k != "status"}
    body["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "annotations"}
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[SPEC_HASH_ANNOTATION] = content_hash(body)[:16]
    return obj
