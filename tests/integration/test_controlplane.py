"""``tests/controlplane/start`` lives no longer than the process that started it.

A test runner killed with SIGKILL has no chance to stop the control plane it started; the kernel
tells the control plane instead (its parent-death signal), and it stops with its components and
etcd, freeing their ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..support.real_cluster import _read_kubeconfig, start_script

from ..conftest import ROOT

# A parent that starts the control plane and then waits, as a test runner does.
PARENT = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(3600)"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            # pid (comm) state ppid ...; comm may hold spaces and parentheses
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> list[str]:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def test_the_control_plane_stops_when_its_parent_is_killed(tmp_path):
    script = start_script(ROOT)
    if script is None:
        pytest.skip("needs the built control plane: run tests/controlplane/build")
    kubeconfig = tmp_path / "kubeconfig"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(script), "--kubeconfig", str(kubeconfig)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list[int] = []
    try:
        _wait(kubeconfig.exists, 240, "the control plane's kubeconfig")
        [supervisor] = _children(parent.pid)
        components = _children(supervisor)
        started += [supervisor, *components]
        assert sorted(_cmdline(pid)[1] for pid in components) == ["kube-apiserver",
                                                                  "kube-controller-manager",
                                                                  "leaderworkerset-controller"]
        apiserver = next(pid for pid in components if _cmdline(pid)[1] == "kube-apiserver")
        etcd_url = next(a for a in _cmdline(apiserver) if a.startswith("--etcd-servers="))
        ports = {"kube-apiserver": int(_read_kubeconfig(kubeconfig)[0].rsplit(":", 1)[1]),
                 "etcd": int(etcd_url.rsplit(":", 1)[1])}
        assert all(_listening(port) for port in ports.values()), ports

        parent.kill()
        parent.wait()

        _wait(lambda: not any(_alive(pid) for pid in started), 60,
              "the control plane's processes to exit")
        assert not [name for name, port in ports.items() if _listening(port)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in filter(_alive, started):  # what a failure left behind
            os.kill(pid, signal.SIGKILL)
