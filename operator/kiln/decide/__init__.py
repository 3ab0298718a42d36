"""``decide(snapshot) -> Actions``: the reconcile of an LLMService as a pure function.

Beside ``render``: no environment, no clock, no API calls. The operator gathers a
:class:`Snapshot` (controller/gather.py), decides, and executes the :class:`Actions`
(controller/execute.py).
"""

from .decide import BUILD_POLL_SECONDS, ROLLOUT_POLL_SECONDS, decide
from .intent import intend, parse, workload_replicas
from .observe import EventReason, decide_observed, observe
from .snapshot import Actions, Cluster, Intent, Observed, Parsed, Snapshot

__all__ = ["decide", "Snapshot", "Actions", "Cluster", "Intent", "Observed", "Parsed", "parse",
           "intend", "workload_replicas", "observe", "decide_observed", "EventReason", "BUILD_POLL_SECONDS",
           "ROLLOUT_POLL_SECONDS"]
