"""Operator scale benchmark: a thousand LLMServices against the API emulator or a real API server.

    python benchmarks/operator_scale.py [--services 1000] [--steady-seconds 65]
                                        [--control-plane real] [--ready-timeout 1800]

``--control-plane real`` runs it against kube-apiserver, kube-controller-manager and etcd from
``tests/controlplane`` (built once per machine with ``tests/controlplane/build``; without it the
benchmark says so and stops): the real Job, Deployment and ReplicaSet controllers create the
Pods, the simulated kubelet (:mod:`kiln.demo.apikubelet`) watches, binds and reports them, the
operator authenticates as the chart's ServiceAccount (with the multi-node and gateway Roles
granted in the benchmark's namespaces, as ``multiNode.namespaces`` and ``gateway.namespaces``
would), and requests are counted from the API server's audit log instead of the emulator's.

The API emulator, the simulated kubelet (build Jobs, pods, one Triton ``/metrics`` endpoint
per pod) and the service manifests live in this process; the operator runs in a child process
(``benchmarks/operator_process.py``) exactly as ``kiln demo`` runs it (kopf, the handlers, the
reconcile, server-side apply over HTTP) and with only the operator's imports, so its resident
memory is measured alone, from ``/proc`` (Linux). The services cycle
through ``examples/`` over ten namespaces; a fifth of them autoscale in builtin mode, so the
operator also scrapes their pods every 15 s.

Measured, and printed as JSON with each target and whether it holds:

- ``secondsToAllReady``: from the first create to every service ``Ready=True`` (target: all
  Ready; past ``--ready-timeout`` the run stops and reports ``servicesReady`` and
  ``secondsWhenStopped`` instead, without a steady state);
- reconcile latency p50/p99, from the operator's own ``kiln_reconcile_duration_seconds``
  histogram (linear within a bucket); target p99 < 1 s; beside it, the time reconciles waited
  for a slot before they started (``kiln_reconcile_queue_seconds``, p50/p99), which the
  reconcile's own time does not include (as controller-runtime's workqueue queue duration);
- the operator's RSS at the end and its peak; target < 300 MiB;
- API requests per minute at steady state, by verb, from the emulator's audit of the
  operator's token over ``--steady-seconds`` (two resync ticks by default); target: zero
  writes (the resync, the observer and the autoscaler read, find nothing changed, and write
  nothing). Steady state starts once a full resync tick and a full observer period have
  passed without an operator write after the last service turned Ready
  (``secondsToSettle``; the first scrapes after Ready write the observed KV figures once
  per service);
- where the machine's time went: CPU seconds of the operator, of this process (the simulated
  kubelet and metrics endpoints, and the emulator) and of the control plane, and the load
  average at the start and the end (the machine may be shared); on the real server, the
  server's own time per operator request (``operatorRequestsServerSide``, from its audit
  log) and, if steady-state writes happen, which LLMService fields they changed
  (``steadyServiceFieldsChanged``); in the operator's log (``operatorLog``), its
  garbage-collection pauses and its own time per call (see ``operator_process.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kiln.api import API_VERSION  # noqa: E402
from kiln.decide.conditions import is_true  # noqa: E402
from kiln.controller.context import MAX_CONCURRENT_RECONCILES, OBSERVE_PERIOD_SECONDS, RESYNC_SECONDS  # noqa: E402
from kiln.demo.run import load_manifests  # noqa: E402
from kiln.demo.login import OPERATOR_TOKEN  # noqa: E402
from kiln.demo.sandbox import Sandbox  # noqa: E402
from kiln.demo.watch import LISTED, ListWatch  # noqa: E402
from tests.support.cluster import chart_rbac, third_party_crds  # noqa: E402
from tests.support.audit import AuditLog, as_entry, seconds  # noqa: E402
from tests.support.real_cluster import (  # noqa: E402
    ControlPlane, RealSandbox, start_script)

NAMESPACES = [f"team-{i}" for i in range(10)]
WRITE_VERBS = ("create", "update", "patch", "delete")
RSS_TARGET_MIB = 300.0
NOT_BUILT = ("error: --control-plane real needs the control plane built from Go modules: run "
             "tests/controlplane/build once (it needs Go; about 6 minutes on an idle 2-core machine), "
             "then run this again")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of a process and its live descendants, from /proc."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        child = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(child)
        times[child] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo += children.get(current, [])
    return total


def _services(count: int) -> list[dict[str, Any]]:
    examples = [m for m in load_manifests(ROOT / "examples") if m.get("kind") == "LLMService"]
    services = []
    for index in range(count):
        manifest = copy.deepcopy(examples[index % len(examples)])
        manifest["metadata"] = {"name": f"svc-{index:04d}", "namespace": NAMESPACES[index % len(NAMESPACES)]}
        if manifest["spec"].get("gateway"):  # one served model name per Gateway (decide/claim.py)
            manifest["spec"]["servedModelName"] = f"model-{index:04d}"
        if index % 5 == 0:
            manifest["spec"]["autoscaling"] = {"mode": "builtin", "minReplicas": 1, "maxReplicas": 2}
        services.append(manifest)
    return services


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """A quantile from cumulative (upper bound, count) histogram buckets, linear within one."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-9)
        lower, below = bound, cumulative
    return lower


async def _histogram(port: int, name: str) -> list[tuple[float, float]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    buckets = [(float(s.labels["le"]), s.value) for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == f"{name}_bucket"]
    return sorted(buckets)


def _by_resource(entries: list[tuple[Any, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        key = f"{entry[1]} {entry[2]}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


class ReadyServices:
    """How many of the benchmark's services are Ready: read from the emulator's store, or
    followed by a watch of the real server (listing a thousand LLMServices every second would
    load the API server, and so the operator's latency, with the benchmark's own reads)."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self._ready: dict[str, bool] = {}  # uid -> Ready, from the watch
        self._task: asyncio.Task[None] | None = None
        # What each change of a service changed (real server only): (when, field path).
        self._last: dict[str, dict[str, Any]] = {}
        self.changes: list[tuple[float, str]] = []

    async def __aenter__(self) -> ReadyServices:
        if isinstance(self.sb, RealSandbox):
            plane = self.sb.plane
            self._watch = ListWatch(plane.server, plane.admin_token, plane.ca_file)
            self._task = asyncio.create_task(self._follow({self.sb.ns(n) for n in NAMESPACES}))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            await self._watch.close()

    async def _follow(self, namespaces: set[str]) -> None:
        async for kind, obj in self._watch.events(f"/apis/{API_VERSION}/llmservices"):
            if kind == LISTED:
                self._ready = {}
            for svc in obj if kind == LISTED else [obj]:
                if svc["metadata"]["namespace"] not in namespaces:
                    continue
                uid = svc["metadata"]["uid"]
                if kind == "DELETED":
                    self._ready.pop(uid, None)
                    self._last.pop(uid, None)
                else:
                    self._ready[uid] = _is_ready(svc)
                    if kind == "MODIFIED" and uid in self._last:
                        at = time.monotonic()
                        self.changes += [(at, path) for path in _changed_paths(self._last[uid], svc)]
                    self._last[uid] = {"status": svc.get("status") or {},
                                       "annotations": svc["metadata"].get("annotations") or {}}

    def changed_since(self, since: float) -> dict[str, int]:
        """How many changes of the services since ``since`` (time.monotonic()) touched each
        field: which status field a steady-state write rewrites."""
        counts: dict[str, int] = {}
        for at, path in self.changes:
            if at >= since:
                counts[path] = counts.get(path, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    @property
    def watching(self) -> bool:
        return self._task is not None

    def count(self) -> int:
        if self._task is not None:
            return sum(self._ready.values())
        return sum(_is_ready(svc) for svc in self.sb.objects("llmservices"))


def _changed_paths(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The status fields (conditions by type, a block's such as ``status.autoscaling`` by
    field) and annotations that differ between a service's last seen state and ``after``."""
    old, new = before["status"], after.get("status") or {}
    paths = []
    for key in sorted(set(old) | set(new)):
        was, now = old.get(key), new.get(key)
        if key == "conditions" or was == now:
            continue
        if isinstance(was, dict) and isinstance(now, dict):  # a block: which of its fields
            paths += [f"status.{key}.{field}" for field in sorted(set(was) | set(now)) if was.get(field) != now.get(field)]
        else:
            paths.append(f"status.{key}")
    conditions = [{c.get("type"): c for c in s.get("conditions") or []} for s in (old, new)]
    for kind in sorted(set(conditions[0]) | set(conditions[1])):
        was, now = conditions[0].get(kind) or {}, conditions[1].get(kind) or {}
        paths += [f"status.conditions[{kind}].{field}" for field in sorted(set(was) | set(now))
                  if was.get(field) != now.get(field)]
    annotations = after["metadata"].get("annotations") or {}
    paths += [f"metadata.annotations.{key}" for key in sorted(set(before["annotations"]) | set(annotations))
              if before["annotations"].get(key) != annotations.get(key)]
    return paths


def _is_ready(service: dict[str, Any]) -> bool:
    return is_true((service.get("status") or {}).get("conditions", []), "Ready")


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Audit:
    """The operator's requests as (who, verb, resource): the emulator's audit, or the real API
    server's audit log (``tests/support/audit.py``)."""

    def __init__(self, sb: Sandbox, log: Path | None) -> None:
        self.sb, self.log = sb, AuditLog(log) if log is not None else None
        self.entries: list[tuple[str, str, str]] = []
        # The operator's requests by "verb resource": their count and the API server's time
        # on them (from receipt to response, in seconds; the real server's log only).
        self.served: dict[str, list[float]] = {}

    def _read(self) -> None:
        if self.log is None:
            self.entries = [(e[0], e[1], e[3]) for e in self.sb.emulator.audit]
            return
        for event in self.log.events():
            if (found := as_entry(event)) is None:
                continue
            # The request's own verb (an apply that creates is a patch), as the server counts it.
            who, resource = found[0], found[3]
            self.entries.append((who, event["verb"], resource))
            if who == OPERATOR_TOKEN:
                took = seconds(event["stageTimestamp"]) - seconds(event["requestReceivedTimestamp"])
                self.served.setdefault(f"{event['verb']} {resource}", []).append(took)

    def server_seconds(self) -> dict[str, dict[str, float]]:
        """Per "verb resource" of the operator's requests: how many, and the API server's
        mean and p99 seconds on one (watches excluded: they last until the server ends them)."""
        report = {}
        for key, times in sorted(self.served.items()):
            if key.startswith("watch "):
                continue
            times = sorted(times)
            report[key] = {"count": len(times), "meanSeconds": round(sum(times) / len(times), 4),
                           "p99Seconds": round(times[min(len(times) - 1, int(0.99 * len(times)))], 4)}
        return report

    async def _refresh(self) -> None:
        # The real server's log grows by every component's requests (hundreds of MiB at 1,000
        # services): parsed off the event loop. The emulator's audit is in memory.
        if self.log is None:
            self._read()
        else:
            await asyncio.to_thread(self._read)

    async def mark(self) -> int:
        await self._refresh()
        return len(self.entries)

    async def since(self, mark: int) -> list[tuple[str, str, str]]:
        await self._refresh()
        return self.entries[mark:]


@contextlib.asynccontextmanager
async def _sandbox(control_plane: str, work: Path) -> AsyncIterator[tuple[Sandbox, Audit, list[str], int | None]]:
    """The sandbox with the benchmark's namespaces, its audit, the operator child's arguments,
    and the control plane's process (None: the emulator, in this one)."""
    if control_plane == "emulator":
        async with Sandbox(build_seconds=2.0, start_seconds=0.5) as sb:
            for namespace in NAMESPACES:
                sb.add_namespace(namespace)
            yield sb, Audit(sb, None), [sb.url], None
        return
    script = start_script(ROOT)
    if script is None:
        raise SystemExit(NOT_BUILT)
    audit_log = work / "audit.log"
    plane = await asyncio.to_thread(ControlPlane, script, third_party_crds(), chart_rbac(), 300.0, audit_log)
    print(f"  kube-apiserver {plane.version} at {plane.server}", file=sys.stderr)
    try:
        async with RealSandbox(plane, build_seconds=2.0, start_seconds=0.5) as sb:
            for namespace in NAMESPACES:
                sb.add_namespace(namespace)
            # The chart grants the Roles of multi-node leaders and of gateway endpoint pickers
            # only in the namespaces its values list: these, as a platform team would list them.
            namespaces = [sb.ns(n) for n in NAMESPACES]
            for obj in chart_rbac({"multiNode": {"namespaces": namespaces},
                                   "gateway": {"namespaces": namespaces}}):
                if obj["kind"] in ("Role", "RoleBinding"):
                    plane.apply(obj)
            yield sb, Audit(sb, audit_log), [plane.server, plane.operator_token, plane.ca_file], plane.pid
    finally:
        plane.stop()


async def _wait_ready(services: ReadyServices, child: subprocess.Popen[bytes], log: str, count: int,
                      started: float, timeout: float) -> tuple[int, float]:
    """(services Ready, seconds since ``started``) once all are, or at ``timeout``."""
    reported = (0, started)  # (Ready count, when) last printed
    while (ready := services.count()) < count:
        if child.poll() is not None:
            raise RuntimeError(f"the operator exited with {child.returncode}; its log: {log}")
        now = time.monotonic()
        if now - started > timeout:
            print(f"  only {ready}/{count} Ready after {now - started:.0f}s: stopped there",
                  file=sys.stderr)
            return ready, now - started
        if ready >= reported[0] + max(1, count // 10) or now - reported[1] >= 30:
            print(f"  {ready}/{count} Ready after {now - started:.0f}s (load average "
                  f"{_load_average()})", file=sys.stderr)
            reported = (ready, now)
        await asyncio.sleep(0.5)
    return count, time.monotonic() - started


async def _steady_state(audit: Audit, steady_seconds: float, services: ReadyServices) -> dict[str, Any]:
    """Settle, then count the operator's requests over ``steady_seconds``.

    The first resync and scrapes after Ready still write (the observed KV capacity, the
    utilisation), once per service. Steady state starts after a full period of every periodic
    handler (resync, observer) without an operator write (or after 5 minutes, whatever it is).
    """
    settle_started = time.monotonic()
    quiet_since = settle_started
    mark = await audit.mark()
    quiet = max(RESYNC_SECONDS, OBSERVE_PERIOD_SECONDS) + 5
    while time.monotonic() - quiet_since < quiet and time.monotonic() - settle_started < 300:
        await asyncio.sleep(1.0)
        fresh = await audit.since(mark)
        mark += len(fresh)
        if any(e[0] == OPERATOR_TOKEN and e[1] in WRITE_VERBS for e in fresh):
            quiet_since = time.monotonic()
    settled = time.monotonic() - settle_started
    mark = await audit.mark()
    window_started = time.monotonic()
    await asyncio.sleep(steady_seconds)
    window = [e for e in await audit.since(mark) if e[0] == OPERATOR_TOKEN]
    per_verb: dict[str, int] = {}
    for entry in window:
        per_verb[entry[1]] = per_verb.get(entry[1], 0) + 1
    minutes = steady_seconds / 60
    writes = [e for e in window if e[1] in WRITE_VERBS]
    return {
        "secondsToSettle": round(settled, 1), "steadyStateSeconds": steady_seconds,
        "steadyRequestsPerMinute": round(len(window) / minutes, 1),
        "steadyRequestsPerMinuteByVerb": {k: round(v / minutes, 1) for k, v in sorted(per_verb.items())},
        "steadyWritesPerMinute": round(len(writes) / minutes, 1),
        "steadyWritesByResource": _by_resource(writes),
        **({"steadyServiceFieldsChanged": services.changed_since(window_started)}
           if services.watching else {}),
    }


async def run(count: int, steady_seconds: float, control_plane: str,
              ready_timeout: float, trace_memory: bool = False, slots: int | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="kiln-scale-"))
    load_at_start = _load_average()
    async with _sandbox(control_plane, work) as (sb, audit, operator_args, plane_pid):
        for namespace in NAMESPACES:
            await sb.add_secret(namespace, "hf-token", {"HF_TOKEN": "hf_benchmark"})
        port = _free_port()
        log = tempfile.NamedTemporaryFile("w+", prefix="kiln-operator-", suffix=".log", delete=False)
        child = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "operator_process.py"),
                                  *(["--trace-memory"] if trace_memory else []),
                                  *([f"--max-concurrent-reconciles={slots}"] if slots else []),
                                  str(port), *operator_args],
                                 stderr=log)
        try:
            sb.start_kubelet()
            async with ReadyServices(sb) as services:
                started = time.monotonic()
                for manifest in _services(count):
                    await sb.create(manifest)
                created = time.monotonic() - started
                ready, to_ready = await _wait_ready(services, child, log.name, count, started,
                                                    ready_timeout)
                steady: dict[str, Any] = {}
                if ready == count:
                    print(f"  all {count} Ready after {to_ready:.0f}s; settling, then measuring "
                          f"{steady_seconds:.0f}s of steady state", file=sys.stderr)
                    steady = await _steady_state(audit, steady_seconds, services)
            load_at_end = _load_average()
            await audit.mark()  # the whole run's requests, for the server-side times
            cpu = {"operator": _cpu_seconds(child.pid),
                   # the simulated kubelet and metrics endpoints (and the emulator, if it is one)
                   "benchmark": time.process_time(),
                   **({"controlPlane": _cpu_seconds(plane_pid)} if plane_pid else {})}
            buckets = await _histogram(port, "kiln_reconcile_duration_seconds")
            queued = await _histogram(port, "kiln_reconcile_queue_seconds")
            rss, peak = _rss_mib(child.pid)
            child.terminate()
            try:
                await asyncio.to_thread(child.wait, 30)
            except subprocess.TimeoutExpired:
                print("  the operator did not stop within 30 s of SIGTERM; killed", file=sys.stderr)
            await sb.stop_kubelet()
        finally:
            if child.poll() is None:
                child.kill()

    p50, p99 = _quantile(buckets, 0.50), _quantile(buckets, 0.99)
    within_1s = dict(buckets).get(1.0, 0.0) / max(buckets[-1][1], 1)
    report: dict[str, Any] = {
        "controlPlane": control_plane, "maxConcurrentReconciles": slots or MAX_CONCURRENT_RECONCILES,
        "operatorLog": log.name,
        "services": count, "namespaces": len(NAMESPACES),
        "loadAverage": {"atStart": load_at_start, "atEnd": load_at_end},
        "secondsToCreate": round(created, 1),
        "servicesReady": ready,
        ("secondsToAllReady" if ready == count else "secondsWhenStopped"): round(to_ready, 1),
        "reconciles": int(buckets[-1][1]),
        "reconcileP50Seconds": round(p50, 4), "reconcileP99Seconds": round(p99, 4),
        "reconcilesUnder1s": round(within_1s, 4),
        "queueP50Seconds": round(_quantile(queued, 0.50), 4), "queueP99Seconds": round(_quantile(queued, 0.99), 4),
        "operatorRssMiB": round(rss, 1), "operatorPeakRssMiB": round(peak, 1),
        "cpuSeconds": {k: round(v, 1) for k, v in cpu.items()},
        **({"operatorRequestsServerSide": audit.server_seconds()} if audit.log else {}),
        **(steady or {"steadyState": "not measured: not every service was Ready"}),
        "targets": {
            "allReady": ready == count,
            "p99Reconcile<1s": within_1s >= 0.99,
            "peakRss<300MiB": peak < RSS_TARGET_MIB,
            "zeroSteadyWrites": bool(steady) and not steady["steadyWritesByResource"],
        },
    }
    report["allTargetsHold"] = all(report["targets"].values())
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--steady-seconds", type=float, default=65.0,
                        help="steady-state window (default: two 30 s resync periods)")
    parser.add_argument("--control-plane", choices=["emulator", "real"], default="emulator",
                        help="the API emulator (default) or tests/controlplane's real API server")
    parser.add_argument("--ready-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="stop waiting for all services Ready after this long and report "
                             "how many were (default: 30 minutes)")
    parser.add_argument("--max-concurrent-reconciles", type=int, metavar="N",
                        help="the operator's reconciles in flight (default: kiln run's)")
    parser.add_argument("--trace-memory", action="store_true",
                        help="have the operator log where its memory was allocated, at the end "
                             "(tracemalloc: slower, so not for timing)")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        print("error: the RSS measurement reads /proc: run on Linux", file=sys.stderr)
        return 2
    report = asyncio.run(run(args.services, args.steady_seconds, args.control_plane,
                             args.ready_timeout, args.trace_memory, args.max_concurrent_reconciles))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
