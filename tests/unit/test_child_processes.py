"""A server a test starts (Prometheus, prometheus-adapter, the Prometheus Operator, the KEDA
HTTP add-on interceptor) does not outlive the test run.

pytest killed with SIGKILL runs no teardown; the servers are started tied to the process
that started them (``tests/support/real_cluster.py``, ``tied_to_parent``), as the control
plane ties its own children (``tests/controlplane/start.go``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ..conftest import ROOT

PARENT = """
import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from tests.support.real_cluster import tied_to_parent
child = subprocess.Popen(["sleep", "120"], preexec_fn=tied_to_parent)
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_started_server_ends_when_the_process_that_started_it_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(ROOT)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator")])})
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive, "the child outlived the process that started it"
