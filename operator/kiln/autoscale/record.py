"""The law's record of a service, carried across operator restarts in its status. Pure.

What the law learns lives in :class:`~kiln.autoscale.law.Recommendations`: the demand at
each decision of the last hour (the burst headroom's rises and peak), when that record began
(the prior headroom shrinks as it grows to two hours) and the TTFT objective's correction. An
operator restart (an upgrade, a node drained, a leader handed over) would otherwise start
every service's record afresh: the learned headroom gone, the prior's spare replicas back
for two hours (on the benchmark's 140 training traces after an hour, with the prior then over
one hour, a restart with no record as each trace opens cost 11.3 % more GPU-hours, 32-36 %
more on smooth traffic), and a correction that had found the model optimistic back at 1.
Other autoscalers keep theirs too: KubeAI patches its moving averages into a ConfigMap after
each calculation (substratusai/kubeai ``internal/modelautoscaler/state.go``), the Flink operator
keeps its autoscaler's history in an ``autoscaler-<name>`` ConfigMap owned by the
deployment (apache/flink-kubernetes-operator, ``autoscaler/state/ConfigMapStore.java``).
Kiln keeps it in ``status.autoscaling.record``: no rights beyond the status Kiln already
writes, gone with the service, and read from the object the autoscaler's timer is handed.

Times in the law are the autoscaler's clock (monotonic, or the demo's simulated one); the
record holds them as seconds before ``savedAt`` (wall time), so a restart reads them back
on its own clock, less the time no operator ran (which does not count as history for the
prior: nothing was recorded then). The stabilisation window's wants are not
kept: after a restart the first decision seeds the current count, which never shortcuts
the window (:mod:`kiln.controller.autoscaler`).
"""

from __future__ import annotations

import datetime
import math

from ..api.llmservice import RECORD_MAX_CHARS, AutoscalerRecord
from .law import LawParams, Recommendations

__all__ = ["RECORD_SAVE_SECONDS", "RECORD_TOLERANCE", "snapshot", "restore", "drift"]

# How often a record may be written into the status, at most.
RECORD_SAVE_SECONDS = 60.0
# A record is written when a restart from the one the status holds would read a decision's
# terms (:class:`~kiln.autoscale.law.Reading`) more than this many replicas away from the
# running law's: a tenth of a replica, so that a restart's need is at most that far off.
RECORD_TOLERANCE = 0.1


def _wall(text: str) -> float | None:
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _text(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def snapshot(recommendations: Recommendations, now: float, wall: float) -> AutoscalerRecord | None:
    """The record of ``recommendations`` at ``now`` (the law's clock), saved at ``wall``
    (seconds since the epoch); None while nothing is recorded."""
    if recommendations.since is None and recommendations.correction == 1.0:
        return None
    since = recommendations.since if recommendations.since is not None else now
    entries: list[str] = []
    size = 0
    for t, d in reversed(recommendations.demand):  # the newest first, as many as fit
        ago = max(0, round(now - t))
        if not math.isfinite(d) or ago > 999999:
            continue
        entry = f"{ago}:{min(max(d, 0.0), 99999.99):.2f}".rstrip("0").rstrip(".")
        size += len(entry) + 1
        if size > RECORD_MAX_CHARS + 1:
            break
        entries.append(entry)
    demand = " ".join(reversed(entries))
    corrected = recommendations.corrected_at
    return AutoscalerRecord(saved_at=_text(wall), started_at=_text(wall - max(0.0, now - since)),
                            demand=demand, correction=min(max(recommendations.correction, 1.0), 100.0),
                            corrected_at=None if corrected is None else _text(wall - max(0.0, now - corrected)))


def restore(record: AutoscalerRecord, now: float, wall: float, memory: float) -> Recommendations | None:
    """The recommendations ``record`` holds, on the law's clock at ``now`` (``wall``: the
    wall time now): what is older than ``memory`` seconds is gone, as it would be had the
    operator run; None when nothing is left, or the record's times do not parse."""
    saved, started = _wall(record.saved_at), _wall(record.started_at)
    if saved is None or started is None or saved > wall + 60 or started > saved:
        return None  # a record from the future is not one this clock can place
    away = max(0.0, wall - saved)
    demand = []
    for entry in record.demand.split():
        ago, _, value = entry.partition(":")
        t = now - away - float(ago)
        if t >= now - memory:
            demand.append((t, float(value)))
    demand.sort()
    if not demand:
        return None
    # The prior shrinks with the time on record, not with the time no operator recorded.
    restored = Recommendations(demand=demand, since=now - (saved - started))
    corrected = None if record.corrected_at is None else _wall(record.corrected_at)
    if corrected is not None and corrected <= saved:
        restored.correction, restored.corrected_at = record.correction, now - (wall - corrected)
    return restored


def drift(saved: AutoscalerRecord | None, recommendations: Recommendations, now: float, wall: float,
          params: LawParams) -> float:
    """How far apart, in replicas, a restart at ``now`` (``wall``) from ``saved`` and the
    running law's ``recommendations`` read a decision's terms, at the last demand on record.

    At a constant load the two part only as the prior shrinks (a restart counts the history
    up to ``savedAt``: two replicas over two hours part by a tenth every six minutes) and
    when the hour of demand ``saved`` holds has aged out; on changing traffic, with the
    demand. The restored side errs toward the prior, that is toward more spare replicas."""
    back = None if saved is None else restore(saved, now, wall, params.headroom_memory)
    demand = recommendations.demand[-1][1] if recommendations.demand else 0.0
    ours = recommendations.reading(now, demand, params)
    return ours.distance((back or Recommendations()).reading(now, demand, params))
