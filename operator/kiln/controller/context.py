"""What the operator's handlers share: the API client, the model resolver, the policy, the
timings, the autoscaler, the telemetry, and the operator's own state. kopf passes it to every
handler as ``memo`` (``kopf.operator(memo=...)``, docs.kopf.dev "In-memory containers":
embedded operators accept ``memo=``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..decide.policy import Policy
from .autoscaler import AUTOSCALE_PERIOD_SECONDS, BuiltinAutoscaler
from .collect import ENGINE_GRACE_SECONDS, ENGINE_SWEEP_SECONDS
from .kube import KubeApi
from .metrics import PodMetrics
from .models import ModelResolver
from .requeue import Requeue
from .telemetry import Telemetry

__all__ = ["OperatorContext", "Timings", "RESYNC_SECONDS", "FULL_RESYNC_SECONDS", "CHILD_DELETED_SECONDS",
           "OBSERVE_PERIOD_SECONDS", "MAX_CONCURRENT_RECONCILES"]

# The resync tick: how soon a change to an owned object (a build Job completing, a
# Deployment's replicas becoming ready, an edit), seen by its watch, is acted on; a deletion
# within CHILD_DELETED_SECONDS (a moment for the rest of a cascade to arrive with it). A service whose owned objects did not change is reconciled in full only every
# FULL_RESYNC_SECONDS (controller-runtime's SyncPeriod, which defaults to 10 hours).
RESYNC_SECONDS = 30.0
FULL_RESYNC_SECONDS = 300.0
CHILD_DELETED_SECONDS = 1.0
# How often a Ready service's pods are scraped for the status's KV figures (in builtin mode
# the autoscaler's own scrapes feed them).
OBSERVE_PERIOD_SECONDS = 60.0
# Reconciles in flight at once, from any trigger (watch events, the resync, the autoscaler).
# Like controller-runtime's MaxConcurrentReconciles (default 1): a burst of a thousand new
# services queues here instead of multiplying API-server load, and each reconcile runs at
# speed. A reconcile mostly waits on the API server, and when the API server's CPU is the
# bottleneck more reconciles in flight only make each one slower: at a thousand services on
# a real API server sharing two cores (benchmarks/operator_scale.py --control-plane real),
# 4 took 334 s to all Ready with a p99 reconcile of 2.3 s, 2 took 302 s with 0.97 s. Against
# the in-process emulator, where a call costs little, 4 took 54-80 s (p99 0.76-0.85 s) and
# 16 took 56 s (p99 2.1 s).
MAX_CONCURRENT_RECONCILES = 2


@dataclass(frozen=True)
class Timings:
    """How often the operator looks again and how long it waits, in seconds."""

    # The timers: the resync tick, the scrape of a Ready service's pods, the builtin
    # autoscaler's decisions.
    resync_period: float = RESYNC_SECONDS
    observe_period: float = OBSERVE_PERIOD_SECONDS
    autoscale_period: float = AUTOSCALE_PERIOD_SECONDS
    # The collection of unreferenced engines (controller/collect.py): how often a namespace
    # is swept, and how long an engine stays unreferenced before its record goes.
    engine_sweep_period: float = ENGINE_SWEEP_SECONDS
    engine_grace: float = ENGINE_GRACE_SECONDS
    # The longest wait before a build, a rollout or a failed reconcile is looked at again
    # (None: the delay the reconcile asks for, or the error backoff's).
    max_retry_delay: float | None = None
    # What a stopping operator gives each object's worker and timer to finish (None: 2 s,
    # kopf's default, and 10 s).
    exit_timeout: float | None = None


@dataclass
class OperatorContext:
    """What the handlers share: the API client, the model resolver, the policy and timings,
    and what the operator keeps in memory between handler runs."""

    api: KubeApi
    models: ModelResolver = field(default_factory=ModelResolver)
    policy: Policy = field(default_factory=Policy)
    timings: Timings = field(default_factory=Timings)
    telemetry: Telemetry = field(default_factory=Telemetry)
    # The one builtin autoscaler: its scrapes of the pods and its decisions' history.
    autoscaler: BuiltinAutoscaler = field(init=False)
    reconcile_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_RECONCILES))
    # Services (by uid) whose owned objects changed since their last resync.
    changed: set[str] = field(default_factory=set)
    # Each service's Requeue (below) by uid, while its requeue daemon runs: shared by every
    # copy, so that an event of one object can wake another's daemon.
    requeues: dict[str, Requeue] = field(default_factory=dict)
    # Per service: kopf hands each object's handlers a shallow copy of this context as its
    # ``memo`` (kopf/_core/reactor/inventory.py, ResourceMemories.recall), so a value set on
    # that copy is the object's own: when the resync last reconciled it in full.
    last_full_resync: float | None = None
    # Per service likewise: when it is next due for a reconcile while it waits for a build or
    # a rollout (controller/requeue.py); made on first use, by ``requeue_of``.
    requeue: Requeue | None = None
    # When each namespace's engines were last swept.
    last_sweep: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.autoscaler = BuiltinAutoscaler(self.api, PodMetrics(self.api), policy=self.policy)

    def child_deleted(self, uid: str) -> None:
        """An object service ``uid`` owns was deleted (by someone else, or by the garbage
        collector): the service is reconciled within CHILD_DELETED_SECONDS, not at its next
        resync tick, as controller-runtime's ``Owns()`` requeues an owner on its children's
        events. Deletions only: the other events of owned objects, most of them made by the
        operator's own writes and a rollout's progress, wait for the tick. A service with no
        requeue daemon is not watched yet (its resume reconcile comes) or is being deleted
        (its children with it): nothing to do."""
        if (due := self.requeues.get(uid)) is not None:
            due.soon(CHILD_DELETED_SECONDS)
