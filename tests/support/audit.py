"""The real API server's audit log as the requests the emulator's audit records.

``tests/controlplane/start --audit-log`` has kube-apiserver write one JSON event per request
and stage (policy level ``Metadata``: who, verb, object, response code; no bodies), in batches
of one (k8s.io/apiserver ``pkg/server/options/audit.go``, the log backend's
``MaxBatchSize: 1``). :class:`AuditLog` reads the events written since it was opened.

Entries have the shape of :attr:`kiln.demo.emulator.KilnEmulator.audit`: (bearer token, RBAC
verb, API group, resource[/subresource], namespace, server-side apply?, name), the operator's
ServiceAccount given as the operator's token. A server-side apply that creates its object is
a ``patch`` answered ``201 Created`` (the audit event's verb is the request's), which the API
server authorizes as ``create`` as well as ``patch`` (``pkg/endpoints/handlers/patch.go``,
``withAuthorization`` with ``createAuthorizerAttributes``): it is entered as a ``create`` by an
apply, as the emulator enters it. An apply that changes an existing object cannot be told
from a merge patch at this level; it is entered as a ``patch``, which is what it was
authorized as.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from pathlib import Path
from typing import Any

from kiln.demo.login import OPERATOR_TOKEN

from .real_cluster import OPERATOR_USER, ControlPlane, path_of

__all__ = ["AuditLog", "Entry", "as_entry", "seconds"]

Entry = tuple[str, str, str, str, "str | None", bool, "str | None"]


class AuditLog:
    """The events ``path`` gains after this object is made (an event half-written then is
    skipped whole)."""

    def __init__(self, path: Path) -> None:
        self.path, self._offset = path, 0
        if not path.exists():
            return
        with path.open("rb") as f:
            f.seek(0, 2)
            self._offset = f.tell()
            if self._offset:
                f.seek(self._offset - 1)
                if f.read(1) != b"\n":  # mid-line: start after it
                    f.readline()
                    self._offset = f.tell()

    def events(self) -> list[dict[str, Any]]:
        """The complete events written since the last call, at stage ``ResponseComplete``."""
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        return [event for line in complete.splitlines()
                if (event := json.loads(line)).get("stage") == "ResponseComplete"]

    def settled(self, plane: ControlPlane, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every event of a request answered before this call: a marker request is made and
        the events read until its own is there (the log backend writes in arrival order)."""
        marker = f"kiln-audit-marker-{uuid.uuid4().hex[:8]}"
        plane.http.get(plane.server + path_of("configmaps", "default", marker), timeout=30)
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            events += self.events()
            if any((e.get("objectRef") or {}).get("name") == marker for e in events):
                return [e for e in events if (e.get("objectRef") or {}).get("name") != marker]
            if time.monotonic() > deadline:
                raise AssertionError(f"the audit log never showed the marker request {marker}")
            time.sleep(0.05)

    async def settled_async(self, plane: ControlPlane, timeout: float = 30.0) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.settled, plane, timeout)


def as_entry(event: dict[str, Any]) -> Entry | None:
    """An event as the emulator's audit entry; None for a request to no resource (discovery)."""
    ref = event.get("objectRef") or {}
    if not ref.get("resource"):
        return None
    user = event["user"]["username"]
    verb, applies = event["verb"], False
    if verb == "patch" and (event.get("responseStatus") or {}).get("code") == 201:
        verb, applies = "create", True
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return (OPERATOR_TOKEN if user == OPERATOR_USER else user, verb, ref.get("apiGroup", ""), resource,
            ref.get("namespace"), applies, ref.get("name"))


def seconds(text: str) -> float:
    """An audit event's RFC 3339 timestamp (microseconds) as seconds since the epoch."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
