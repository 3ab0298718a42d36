"""What ``decide`` reads and what it returns: a snapshot of one LLMService and its world, and
the actions that bring the world to what the spec asks for.

The snapshot is everything the operator knows at one moment (the parsed spec, the live
children from the watch caches, the engine record and its build Job, the latest metric
samples and autoscale decision, the time); the actions are everything it will do about it (the
objects to apply in order, the engine record's status, Events, the one status write, when to
come back). The executor (controller/execute.py) gathers the one and carries out the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api import LLMServiceSpec, LLMServiceStatus
from ..api.llmservice import AutoscalerRecord
from ..autoscale import Decision, KVSample
from ..errors import NotReadyYet, SpecInvalid
from ..planner import GPU, ModelConfig, Plan
from ..render import Rendered, ServiceRef
from .credentials import Credentials
from .policy import Policy

__all__ = ["Event", "Parsed", "Intent", "Observed", "Superseded", "Cluster", "Snapshot", "Actions"]

Event = tuple[str, str, str]  # (type, reason, message), as kopf.event posts it


@dataclass(frozen=True)
class Parsed:
    """The spec, checked against the API's rules and the platform team's policy."""

    spec: LLMServiceSpec
    gpu: GPU


@dataclass(frozen=True)
class Intent:
    """What the spec asks for, before looking at the cluster: the plan and, if it fits, every
    object rendered for ``replicas`` workload replicas."""

    plan: Plan
    rendered: Rendered | SpecInvalid | None  # None: it does not fit; SpecInvalid: refused
    replicas: int


@dataclass(frozen=True)
class Observed:
    """What the timers brought: one scrape of the service's pods (None: no scrape this time)
    and the builtin autoscaler's decision for a workload of ``current`` replicas."""

    samples: tuple[KVSample, ...] | None = None
    decision: Decision | None = None
    current: int | None = None
    record: AutoscalerRecord | None = None  # the law's record, when one is due (else the status keeps its own)


@dataclass(frozen=True)
class Superseded:
    """The running build Job of the engine the service's status names and its spec no longer
    wants (controller/collect.py, ``superseded_build``)."""

    job: dict[str, Any]
    engine: dict[str, Any] | None  # that engine's LLMEngine record, as read
    wanted: bool  # another service of the namespace names the engine in its status


@dataclass(frozen=True)
class Cluster:
    """What the API server (or the watch caches) hold for the service."""

    serves: frozenset[tuple[str, str]] = frozenset()  # optional APIs the cluster serves
    children: Mapping[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)  # (kind, name)
    engine: dict[str, Any] | None = None  # the LLMEngine record
    job: dict[str, Any] | None = None  # its build Job
    build_failure: str = ""  # what a failed build's pods said (read once, when it failed)
    superseded: Superseded | None = None  # the running build of the engine the service moved from
    read_refusal: SpecInvalid | None = None  # a child's read the API server refused
    launcher_conflict: SpecInvalid | None = None  # a pod the launcher Role would reach is not the service's
    # The objects the inventory (``status.children``) names and the spec no longer asks for,
    # as read: (kind, name) -> the object, or None if it is gone or cannot be read.
    leftovers: Mapping[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    # A serving pod the scheduler cannot place, and the scheduler's message: (pod, message),
    # read while the workload has fewer ready replicas than the rollout wants.
    unschedulable: tuple[str, str] | None = None
    # A serving pod whose container exited with a failure: its name, how (the container, the
    # exit code, its last lines) and its restarts.
    failing: tuple[str, str, int] | None = None
    build_unschedulable: tuple[str, str] | None = None  # the same, of the build Job's pod
    build_refused: str | None = None  # why the namespace refuses the build Job's pod (its Events)
    refused: str | None = None  # why it refuses a multi-node group's pods (its StatefulSets' Events)
    # A running Job that removes the engine's cache entry (the sweep's, controller/collect.py):
    # a build started now would find the files there and be told it was done.
    purging: str | None = None
    # spec.gateway: the other services whose route routes its served model name on its
    # Gateway (``status.gatewayClaims``), as (routedSince, namespace, name).
    gateway_claims: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Snapshot:
    ref: ServiceRef
    generation: int | None
    status: LLMServiceStatus
    now: str
    policy: Policy = field(default_factory=Policy)
    parsed: Parsed | SpecInvalid | None = None
    credentials: Credentials | SpecInvalid | None = None
    model: ModelConfig | None = None
    model_why: str = ""  # why there is no model config (Fits=Unknown)
    intent: Intent | SpecInvalid | None = None
    cluster: Cluster = field(default_factory=Cluster)
    observed: Observed = field(default_factory=Observed)


@dataclass
class Actions:
    """What one reconcile does, in the order the executor does it."""

    status: LLMServiceStatus
    events: list[Event] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)  # with their dependents
    # The previous workload, deleted (with its pods) once the service is Ready on the new one.
    retire: list[dict[str, Any]] = field(default_factory=list)
    engine: dict[str, Any] | None = None  # the LLMEngine record the statuses below are for
    engine_record: dict[str, Any] | None = None  # the LLMEngine record to create
    build_job: dict[str, Any] | None = None  # to create; ``started`` only if this create made it
    # RFC 6902 patches that make the service one of a build Job's owners (every service that
    # waits on a build is): (Job, operations).
    job_owners: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)
    # The superseded build Job, the service's UID and whether another service names its engine
    # (decide.ownership.let_go): left, or deleted while the service is its only owner; then,
    # if deleted, its Event and its LLMEngine's status patch (onto the record as read).
    let_go: tuple[dict[str, Any], str | None, bool] | None = None
    cancelled: list[Event] = field(default_factory=list)
    cancelled_engine: tuple[dict[str, Any], dict[str, Any]] | None = None
    started: list[Event] = field(default_factory=list)
    started_engine_status: dict[str, Any] | None = None
    engine_status: dict[str, Any] | None = None  # a merge patch of the LLMEngine's status
    engine_version: str | None = None  # the record's resourceVersion, as read: engine_status's precondition
    finished: list[Event] = field(default_factory=list)  # the build's end, told only if engine_status is written
    apply: list[dict[str, Any]] = field(default_factory=list)  # server-side apply, in order
    workload: dict[str, Any] | None = None  # which of them is the workload
    workload_generation: int | None = None  # the live workload's metadata.generation, as decided on
    gateway: tuple[dict[str, Any], ...] = ()  # which are the gateway's (a 403 there is the platform's choice)
    requeue: NotReadyYet | None = None
    build_seconds: float | None = None  # run time of a build Job that completed just now
    # (replicas, now, generation) once the children are decided: the rollout is concluded
    # from the workload the API server returns (kiln.decide.decide.rolled_out).
    rollout: tuple[int, str, int | None] | None = None
    unschedulable: tuple[str, str] | None = None  # the snapshot's, for the rollout's message
    failing: tuple[str, str, int] | None = None  # the same: a serving container that exits
    refused: str | None = None  # the same: a multi-node group's pods refused
