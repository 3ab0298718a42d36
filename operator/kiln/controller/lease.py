"""One operator at a time: a ``coordination.k8s.io/v1`` Lease, taken and kept as client-go's
leader election does (controller-runtime's ``--leader-elect``, which KServe, KubeRay and the
NIM operator run with).

Without it, a pod evicted or deleted (a node drain, a preemption) is replaced at once while
the old one is still stopping, a rollout overlaps the old and new pods, and a second ``kiln
run`` may be started by hand: two operators would then apply older and newer renderings over
each other, autoscale the same service from two windows and cancel each other's builds. With
the Lease, an operator does nothing until it holds it: the others are standbys
(controller/operator.py serves their probes and metrics while they wait), and the chart may
run two pods.

The rules are client-go's (k8s.io/client-go ``tools/leaderelection/leaderelection.go``):

- A Lease held by another is taken over only after a full ``leaseDurationSeconds`` during which
  its record did not change, measured on this process's monotonic clock from when it last saw
  the record change (``isLeaseValid``: ``observedTime + LeaseDuration``), never from the
  ``renewTime`` written by another host's clock.
- Every write carries the resourceVersion read (a 409 is someone else's write: no take-over).
- The holder renews every ``retry_period``; one that has not renewed within ``renew_deadline``
  has lost it and must stop at once (controller-runtime's manager exits): the others may take
  over ``lease_duration`` after its last renewal, and the deadline is shorter.
- On a clean stop the holder releases it (``ReleaseOnCancel``: no holder, a duration of one
  second), so the next operator starts without waiting out the duration.

The durations are controller-runtime's (``pkg/manager/internal.go``, ``startLeaderElection``:
15 s, 10 s, 2 s, "taken from" k8s.io/apiserver's defaults; "leader election lost" ends its
manager).
The Kubernetes client's own ``kubernetes.leaderelection`` is not used: it runs in threads with
blocking sleeps, reads the global client configuration, cannot be stopped and never releases.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..errors import KilnError
from .kube import ApiException, KubeApi

__all__ = ["random_identity", "LeaderLease", "LEASE_NAME", "LEASE_DURATION", "RENEW_DEADLINE", "RETRY_PERIOD"]


def random_identity() -> str:
    """An operator's name when its pod gives none (``$POD_NAME``): to the Lease and to kopf."""
    return f"kiln-{uuid.uuid4().hex[:12]}"

LEASE_NAME = "kiln-operator"
LEASE_DURATION = 15  # whole seconds: the Lease's leaseDurationSeconds is an integer
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
_LEASE = ("coordination.k8s.io/v1", "Lease")

logger = logging.getLogger(__name__)


def _micro_time() -> str:
    """Now as a Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What of a Lease's spec tells a change of its holder's record: its holder first."""
    return (spec.get("holderIdentity") or None, spec.get("renewTime"), spec.get("leaseDurationSeconds"),
            spec.get("leaseTransitions"))


class LeaderLease:
    """The Lease ``name`` in ``namespace``, for ``identity`` (default: a random one; the chart
    passes the pod's name)."""

    def __init__(self, api: KubeApi, namespace: str, *, name: str = LEASE_NAME, identity: str | None = None,
                 duration: int = LEASE_DURATION, renew_deadline: float = RENEW_DEADLINE,
                 retry_period: float = RETRY_PERIOD, clock: Callable[[], float] = time.monotonic) -> None:
        if not renew_deadline < duration:
            raise ValueError("the renew deadline must be shorter than the lease duration")
        self.api, self.namespace, self.name = api, namespace, name
        self.identity = identity or random_identity()
        self.duration, self.renew_deadline, self.retry_period = duration, renew_deadline, retry_period
        self._clock = clock
        # When the API server last answered this candidate about the Lease (None: never): a
        # standby that hears from it can take over; one that does not is not ready to.
        self.answered_at: float | None = None
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._held: dict[str, Any] | None = None  # the Lease as this holder last wrote it

    def answering(self) -> bool:
        """Whether the API server answered about the Lease within the last three tries."""
        return self.answered_at is not None and self._clock() - self.answered_at <= 3 * self.retry_period

    @property
    def holder(self) -> str | None:
        """Who holds the Lease, as this process last read it (None: no one, or not read yet)."""
        return (self._observed or (None,))[0]

    async def acquire(self) -> None:
        """Wait until this process holds the Lease. A refusal (403) or a namespace that does
        not exist is a KilnError naming it (and the grant it needs); any other failure is
        tried again."""
        waiting_for = None
        while not await self._try_or_refuse():
            holder = self.holder
            if holder != waiting_for:
                logger.info(f"waiting for the Lease {self.namespace}/{self.name}, held by {holder}")
                waiting_for = holder
            await asyncio.sleep(self.retry_period)
        logger.info(f"{self.identity} holds the Lease {self.namespace}/{self.name}")

    async def _try_or_refuse(self) -> bool:
        try:
            return await self._try()
        except ApiException as error:
            if error.status == 403:
                raise KilnError(
                    f"--leader-election-namespace: the operator may not take the Lease "
                    f"{self.namespace}/{self.name}: grant it create on leases, and get and patch of the "
                    f"Lease {self.name}, in namespace {self.namespace} (the chart's Role <release>-lease)") from None
            if error.status == 404:  # the create's answer: a get's 404 is no Lease yet
                raise KilnError(f"--leader-election-namespace: namespace {self.namespace} does not exist") from None
            logger.warning(f"taking the Lease {self.namespace}/{self.name}: {error.status} {error.reason}")
            return False

    async def hold(self) -> None:
        """Renew the Lease every ``retry_period``; return once it is lost (not renewed within
        ``renew_deadline``): the caller must stop acting at once."""
        renewed = self._clock()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                if await self._try():
                    renewed = self._clock()
                    continue
            except Exception as error:  # noqa: BLE001 - any failure to renew counts toward the deadline
                logger.warning(f"renewing the Lease {self.namespace}/{self.name}: {error!r}")
            if self._clock() - renewed >= self.renew_deadline:
                logger.error(f"{self.identity} lost the Lease {self.namespace}/{self.name}: "
                             f"not renewed for {self.renew_deadline:g} s")
                return

    async def release(self) -> None:
        """Give the Lease up, if this process holds it (read again: a renewal cancelled
        mid-way may have written a version this process has not seen)."""
        if self._held is None:
            return
        self._held = None
        try:
            lease = await self.api.get(*_LEASE, self.name, self.namespace)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            await self.api.patch(lease, {"spec": {
                "holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _micro_time()}},
                resource_version=lease["metadata"]["resourceVersion"])
        except ApiException as error:  # taken since: nothing of ours to give up
            logger.info(f"not releasing the Lease {self.namespace}/{self.name}: {error.status}")

    async def _try(self) -> bool:
        """client-go's ``tryAcquireOrRenew``: take, or renew, the Lease if it is free, expired
        or ours; whether this process holds it now."""
        lease = await self.api.get(*_LEASE, self.name, self.namespace)
        self.answered_at = self._clock()
        now = _micro_time()
        if lease is None:
            made = await self.api.create({
                "apiVersion": _LEASE[0], "kind": _LEASE[1],
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0}})
            return self._wrote(made)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        record = _record(spec)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        held_for = float(spec.get("leaseDurationSeconds") or 0)
        if holder not in (None, self.identity) and self._clock() < self._observed_at + held_for:
            return False
        mine = holder == self.identity
        try:
            written = await self.api.patch(lease, {"spec": {
                "holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                "acquireTime": spec.get("acquireTime") if mine else now, "renewTime": now,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)}},
                resource_version=lease["metadata"]["resourceVersion"])
        except ApiException as error:
            if error.status == 409:  # written by another since it was read
                return False
            raise
        return self._wrote(written)

    def _wrote(self, lease: dict[str, Any] | None) -> bool:
        if lease is None:  # created by another first
            return False
        spec = lease.get("spec") or {}
        self._observed = _record(spec)
        self._observed_at, self._held = self._clock(), lease
        return True
