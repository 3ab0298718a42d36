"""The operator's Lease (controller/lease.py) between two candidates, on both back-ends:
one holder at a time, a clean stop hands over at once, a crashed holder after the lease's
duration, and a holder that cannot renew knows it has lost it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kiln.controller.kube import ApiException
from kiln.errors import KilnError
from kiln.controller.lease import LEASE_DURATION, RENEW_DEADLINE, LeaderLease
from kiln.controller.operator import LEASE_LOST_EXIT

from ..conftest import ROOT
from ..support.real_cluster import free_port, stop_process, tied_to_parent

NS = "kiln-system"
# Short, in the proportions of the defaults (15 s, 10 s, 2 s).
FAST = {"duration": 2, "renew_deadline": 1.2, "retry_period": 0.1}


def _candidate(sb, identity):
    return LeaderLease(sb.api, sb.ns(NS), identity=identity, **FAST)


async def _lease(sb):
    return await sb.api.get("coordination.k8s.io/v1", "Lease", "kiln-operator", sb.ns(NS))


async def test_one_holder_at_a_time_and_a_clean_stop_hands_over_at_once(make_sandbox):
    async with make_sandbox() as sb:
        sb.add_namespace(NS)
        first, second = _candidate(sb, "first"), _candidate(sb, "second")
        await first.acquire()
        holding = asyncio.ensure_future(first.hold())
        waiting = asyncio.ensure_future(second.acquire())
        await asyncio.sleep(3 * FAST["duration"])  # renewed all along: never taken
        assert not waiting.done() and not holding.done()
        assert (await _lease(sb))["spec"]["holderIdentity"] == "first"

        holding.cancel()
        await first.release()
        released = time.monotonic()
        await asyncio.wait_for(waiting, timeout=FAST["duration"])
        assert time.monotonic() - released < FAST["duration"]  # no wait for the duration
        spec = (await _lease(sb))["spec"]
        assert spec["holderIdentity"] == "second" and spec["leaseTransitions"] == 1


async def test_a_holder_that_stopped_without_releasing_is_taken_over_after_the_duration(make_sandbox):
    """As when the holder's pod is killed: its Lease stays, unrenewed; the next candidate
    takes it only after a whole duration without a change, on its own clock."""
    async with make_sandbox() as sb:
        sb.add_namespace(NS)
        crashed, next_one = _candidate(sb, "crashed"), _candidate(sb, "next")
        await crashed.acquire()
        started = time.monotonic()
        await asyncio.wait_for(next_one.acquire(), timeout=4 * FAST["duration"])
        assert time.monotonic() - started >= FAST["duration"] - FAST["retry_period"]
        assert (await _lease(sb))["spec"]["holderIdentity"] == "next"


async def test_a_holder_that_cannot_renew_knows_it_has_lost_the_lease(make_sandbox):
    """Another process wrote the Lease (an operator that judged it expired, or a platform
    team's hand): the holder's renewals no longer land, and its ``hold`` returns within the
    renew deadline, before anyone may take over, so that it stops acting."""
    async with make_sandbox() as sb:
        sb.add_namespace(NS)
        holder = _candidate(sb, "holder")
        await holder.acquire()
        holding = asyncio.ensure_future(holder.hold())
        await asyncio.sleep(0.3)
        lease = await _lease(sb)
        await sb.api.patch(lease, {"spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 60}})
        taken = time.monotonic()
        await asyncio.wait_for(holding, timeout=FAST["renew_deadline"] + 1.0)
        assert time.monotonic() - taken < FAST["duration"]
        await holder.release()  # no longer its own: left as it is
        assert (await _lease(sb))["spec"]["holderIdentity"] == "someone-else"


async def test_the_charts_service_account_may_take_keep_and_release_its_lease_and_no_other(
        backend, control_plane):
    """As the operator's pod authenticates, with the chart's RBAC enforced by the real API
    server: the Lease kiln-operator in the release's namespace is the operator's to take,
    renew and release; a Lease of another name is not its to read."""
    if backend != "real":
        pytest.skip("RBAC is enforced by the real API server")
    api, admin = control_plane.api(operator=True), control_plane.api()
    try:
        lease = LeaderLease(api, "kiln-system", identity="kiln-0", **FAST)
        await lease.acquire()
        assert await lease._try()  # a renewal: get and patch
        await lease.release()
        held = await admin.get("coordination.k8s.io/v1", "Lease", "kiln-operator", "kiln-system")
        assert held["spec"].get("holderIdentity") is None and held["spec"]["leaseDurationSeconds"] == 1
        with pytest.raises(ApiException) as refused:
            await api.get("coordination.k8s.io/v1", "Lease", "another", "kiln-system")
        assert refused.value.status == 403
        # Elsewhere than the release's namespace: one message, naming the namespace and the grant.
        with pytest.raises(KilnError) as elsewhere:
            await LeaderLease(api, "default", **FAST).acquire()
        assert "may not take the Lease default/kiln-operator" in elsewhere.value.message
        assert "in namespace default" in elsewhere.value.message
        with pytest.raises(KilnError) as nowhere:
            await LeaderLease(admin, "no-such-namespace", **FAST).acquire()
        assert nowhere.value.message == "--leader-election-namespace: namespace no-such-namespace does not exist"
    finally:
        await api.close()
        await admin.close()


def _kubeconfig(plane, path):
    """A kubeconfig of the operator's ServiceAccount (the chart's RBAC applies to it)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": [{"name": "plane", "cluster": {"server": plane.server, "certificate-authority": plane.ca_file}}],
        "users": [{"name": "operator", "user": {"token": plane.operator_token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "plane", "user": "operator"}}]}))
    return path


def _kiln_run(kubeconfig, identity, log, health_port, metrics_port):
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": identity, "PYTHONPATH": str(ROOT / "operator")}
    return subprocess.Popen([sys.executable, "-m", "kiln", "run", "--metrics-port", str(metrics_port),
                             "--health-port", str(health_port), "-n", "kiln-lease-test",
                             "--leader-election-namespace", "kiln-system"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)


def _get(port, path, host="127.0.0.1"):
    """(status, body) of GET ``path`` on ``host``:``port``; (None, error) if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return None, repr(error)


def _leader_gauge(port, host="127.0.0.1"):
    status, body = _get(port, "/metrics", host)
    if status != 200:
        return None
    [family] = [f for f in text_string_to_metric_families(body) if f.name == "kiln_operator_leader"]
    return family.samples[0].value


async def test_a_second_kiln_run_waits_takes_over_when_the_first_stops_and_exits_when_it_loses_the_lease(
        backend, control_plane, tmp_path):
    """Two ``kiln run`` processes as the chart runs them (the operator's ServiceAccount, the
    default durations): the second does nothing while the first holds the Lease, but answers
    its health probe and says ``kiln_operator_leader 0`` (a standby, which its liveness probe
    keeps), on IPv4 and IPv6 both, holds it within seconds of the first's clean stop (released, not waited out), and
    exits with code 4 once its renewals no longer land."""
    if backend != "real":
        pytest.skip("two processes against one API server: the real one")
    admin = control_plane.api()
    kubeconfig = _kubeconfig(control_plane, tmp_path / "operator.kubeconfig")
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("first", "second")]  # noqa: SIM115

    async def holder():
        lease = await admin.get("coordination.k8s.io/v1", "Lease", "kiln-operator", "kiln-system")
        return ((lease or {}).get("spec") or {}).get("holderIdentity")

    async def until(predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while not await predicate():
            assert time.monotonic() < deadline, f"{what}: {[(tmp_path / f'{n}.log').read_text()[-2000:] for n in ('first', 'second')]}"
            await asyncio.sleep(0.2)

    ports = {name: (free_port(), free_port()) for name in ("first", "second")}  # health, metrics
    first = _kiln_run(kubeconfig, "first", logs[0], *ports["first"])
    second = None
    try:
        async def first_holds():
            return await holder() == "first"
        await until(first_holds, 60, "the first holds the Lease")
        second = _kiln_run(kubeconfig, "second", logs[1], *ports["second"])

        # A new interpreter importing kopf on a loaded machine can take longer than any fixed
        # sleep to say it waits: wait for it to say so (a standby that took the Lease instead
        # fails the holder check below).
        async def second_waits():
            assert second.poll() is None, (tmp_path / "second.log").read_text()[-2000:]
            return "waiting for the Lease kiln-system/kiln-operator, held by first" in \
                (tmp_path / "second.log").read_text()
        await until(second_waits, 60, "the second waits for the Lease")
        await asyncio.sleep(3)  # more than one retry period of the second's: still only waiting
        assert await holder() == "first" and second.poll() is None
        # on both address families (a pod on an IPv6 network is probed and scraped at its IPv6 address)
        for host in ("127.0.0.1", "[::1]"):
            status, body = await asyncio.to_thread(_get, ports["second"][0], "/healthz", host)
            assert status == 200 and json.loads(body) == {
                "leader": False, "lease": "kiln-system/kiln-operator", "holder": "first"}, (host, body)
            assert await asyncio.to_thread(_leader_gauge, ports["second"][1], host) == 0
            # Ready: the API server answers it about the Lease, so it can take over.
            status, body = await asyncio.to_thread(_get, ports["second"][0], "/readyz", host)
            assert status == 200 and json.loads(body)["ready"] is True, (host, body)
            status, body = await asyncio.to_thread(_get, ports["first"][0], "/healthz", host)
            assert status == 200 and json.loads(body)["leader"] is True, (host, body)
            assert await asyncio.to_thread(_leader_gauge, ports["first"][1], host) == 1

        first.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert await asyncio.to_thread(first.wait, 30) == 0

        async def second_holds():
            return await holder() == "second"
        await until(second_holds, 15, "the second holds the Lease")
        assert time.monotonic() - stopped < LEASE_DURATION

        # The gauge is set once the second's write of the Lease has returned to it, which can be
        # after this test has read the Lease it wrote: wait for it rather than read it once.
        async def second_says_it_leads():
            return await asyncio.to_thread(_leader_gauge, ports["second"][1]) == 1
        await until(second_says_it_leads, 15, "kiln_operator_leader 1 on the new leader")

        async def leader_answers():  # the same endpoint, now saying it leads
            status, body = await asyncio.to_thread(_get, ports["second"][0], "/healthz")
            return status == 200 and json.loads(body)["leader"] is True
        await until(leader_answers, 15, "the new leader's health endpoint")

        lease = await admin.get("coordination.k8s.io/v1", "Lease", "kiln-operator", "kiln-system")
        await admin.patch(lease, {"spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 60}})
        taken = time.monotonic()
        assert await asyncio.to_thread(second.wait, RENEW_DEADLINE + 10) == LEASE_LOST_EXIT
        assert time.monotonic() - taken < LEASE_DURATION
    finally:
        for process in (first, second):
            if process is not None:
                stop_process(process, 10)
        for log in logs:
            log.close()
        lease = await admin.get("coordination.k8s.io/v1", "Lease", "kiln-operator", "kiln-system")
        if lease is not None:
            await admin.delete(lease)
        await admin.close()
