"""What the operator's handlers share: the API client, the model resolver, the autoscaler,
the timings, the telemetry. kopf passes it to every handler as ``memo`` (``kopf.operator(memo=
...)``, docs.kopf.dev "In-memory containers": embedded operators accept ``memo=``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp

from ..decide.policy import Policy
from .autoscaler import AUTOSCALE_PERIOD_SECONDS, BuiltinAutoscaler, DecisionClock
from .collect import ENGINE_GRACE_SECONDS, ENGINE_SWEEP_SECONDS
from .kube import KubeApi
from .metrics import MetricsSource, PodMetrics
from .models import ModelResolver
from .telemetry import Telemetry

__all__ = ["OperatorContext", "RESYNC_SECONDS", "FULL_RESYNC_SECONDS", "OBSERVE_PERIOD_SECONDS",
           "OPERATOR_TOKEN", "MAX_CONCURRENT_RECONCILES"]

# The resync tick: how soon a change to an owned object (a build Job completing, a
# Deployment's replicas becoming ready, an edit or a deletion), seen by its watch, is acted
# on. A service whose owned objects did not change is reconciled in full only every
# FULL_RESYNC_SECONDS (controller-runtime's SyncPeriod, which defaults to 10 hours).
RESYNC_SECONDS = 30.0
FULL_RESYNC_SECONDS = 300.0
# How often a Ready service's pods are scraped for the status's KV figures (in builtin mode
# the autoscaler's own scrapes feed them).
OBSERVE_PERIOD_SECONDS = 60.0
# The bearer token the operator presents to an emulator, so that its requests can be told
# apart from the tests' and the simulated kubelet's (the RBAC test audits them).
OPERATOR_TOKEN = "kiln-operator"
# Reconciles in flight at once, from any trigger (watch events, the resync, the autoscaler).
# Like controller-runtime's MaxConcurrentReconciles (default 1): a burst of a thousand new
# services queues here instead of multiplying API-server load, and each reconcile runs at
# speed. A reconcile mostly waits on the API server, so a few in flight keep it busy: at a
# thousand services (benchmarks/operator_scale.py, one run each) 4 took 74 s to all Ready
# with a p99 reconcile of 0.78 s, 16 took 56 s with a p99 of 2.1 s.
MAX_CONCURRENT_RECONCILES = 4


@dataclass
class OperatorContext:
    """What the handlers share: the API client, the model resolver, and (for the emulator)
    where to log in."""

    api: KubeApi
    models: ModelResolver = field(default_factory=ModelResolver)
    login_url: str | None = None
    # The identity and trust for ``login_url``: a real API server's operator token and CA file
    # (the emulator takes the fixed token over plain HTTP).
    login_token: str = OPERATOR_TOKEN
    login_ca_file: str | None = None
    # The demo and the tests poll builds and rollouts faster than a real cluster needs.
    max_retry_delay: float | None = None
    metrics: MetricsSource | None = None
    autoscale_period: float = AUTOSCALE_PERIOD_SECONDS
    observe_period: float = OBSERVE_PERIOD_SECONDS
    # LawParams timing overrides (window_seconds, stale_seconds, headroom_*) for the demo
    # and the tests.
    autoscale_timing: dict[str, float] = field(default_factory=dict)
    # The demo's simulated clock for the autoscaler's decisions (None: wall time).
    decision_clock: DecisionClock | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    policy: Policy = field(default_factory=Policy)
    # Seconds a stopping operator gives each object's worker and timer to finish (2 s and
    # 10 s when None); the restart tests stop it as abruptly as a kill would.
    exit_timeout: float | None = None
    # The HTTP session kopf uses when ``login_url`` is set; closed by ``run_operator``.
    kopf_session: aiohttp.ClientSession | None = None
    reconcile_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_RECONCILES))
    # Services (by uid) whose owned objects changed since their last resync.
    changed: set[str] = field(default_factory=set)
    # Per service: kopf hands each object's handlers a shallow copy of this context as its
    # ``memo`` (kopf/_core/reactor/inventory.py, ResourceMemories.recall), so a value set on
    # that copy is the object's own: when the resync last reconciled it in full.
    last_full_resync: float | None = None
    # The resync tick, and the collection of unreferenced engines (controller/collect.py):
    # how often a namespace is swept, how long an engine stays unreferenced before its record
    # goes, and when each namespace was last swept. The tests shorten them.
    resync_period: float = RESYNC_SECONDS
    engine_sweep_period: float = ENGINE_SWEEP_SECONDS
    engine_grace: float = ENGINE_GRACE_SECONDS
    last_sweep: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = PodMetrics(self.api)
        self.autoscaler = BuiltinAutoscaler(self.api, self.metrics, dict(self.autoscale_timing),
                                            policy=self.policy, decision_clock=self.decision_clock)
