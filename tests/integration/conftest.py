"""The integration suite's two back-ends: the kmock-based emulator and a real control plane.

``backend`` is ``emulator`` or ``real``. ``real`` is kube-apiserver + kube-controller-manager +
etcd from ``tests/controlplane`` (one per test session), used wherever that binary is built for
the current sources (``.ci/run`` builds it); elsewhere its cases are skipped, saying how to build
it. The operator on ``real`` authenticates as the chart's ServiceAccount with exactly the chart's
ClusterRole.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support.endpoint_picker import epp_binary as built_epp
from ..support.prometheus import PrometheusOperator
from ..support.prometheus import prometheus_binaries as built_prometheus
from ..support.real_cluster import ControlPlane, RealSandbox, start_script
from kiln.demo.emulator import KilnEmulator
from kiln.demo.sandbox import Sandbox

from ..conftest import ROOT
from ..support.cluster import chart_rbac, third_party_crds

BACKENDS = ["emulator", "real"]
_started: dict[str, str] = {}  # what the terminal summary reports
NOT_BUILT = "the real control plane is not built here: run tests/controlplane/build"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane | None]:
    """The real control plane, one per test session, writing its audit log (every request's
    user, verb, object and response code: tests/support/audit.py reads it)."""
    script = start_script(ROOT)
    if script is None:
        yield None
        return
    plane = ControlPlane(script, third_party_crds(), chart_rbac(),
                         audit_log=tmp_path_factory.mktemp("controlplane") / "audit.log")
    _started["version"] = plane.version
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def real_plane(control_plane: ControlPlane | None) -> ControlPlane:
    """The real control plane, for a case that runs on it alone; skipped where it is not built."""
    if control_plane is None:
        pytest.skip(NOT_BUILT)
    return control_plane


@pytest.fixture(scope="session")
def prometheus_binaries() -> Path:
    """Where ``tests/prometheus/build`` put its servers; skipped where it did not."""
    path = built_prometheus(ROOT)
    if path is None:
        pytest.skip("the servers of tests/prometheus are not built here: run tests/prometheus/build")
    return path


@pytest.fixture(scope="session")
def epp_binary() -> Path:
    """The endpoint picker ``tests/gateway/build`` built; skipped where it did not."""
    path = built_epp(ROOT)
    if path is None:
        pytest.skip("the endpoint picker of tests/gateway is not built here: run tests/gateway/build")
    return path


@pytest.fixture(scope="session")
def prometheus_operator(control_plane: ControlPlane | None, prometheus_binaries: Path) -> Iterator[PrometheusOperator]:
    """The Prometheus Operator on the session's control plane (its CRDs stay installed)."""
    if control_plane is None:
        pytest.skip(NOT_BUILT)
    operator = PrometheusOperator(prometheus_binaries, control_plane)
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "real":
        reason = next((m.args[0] for m in request.node.iter_markers("emulator_only")), None)
        if reason:
            pytest.skip(f"emulator only: {reason}")
        request.getfixturevalue("real_plane")  # skips where it is not built
    return str(request.param)


@pytest.fixture
def make_sandbox(backend: str, request: pytest.FixtureRequest) -> Any:
    """``async with make_sandbox(**options) as sb``: a Sandbox on this test's back-end."""
    @contextlib.asynccontextmanager
    async def make(*, missing_apis: tuple[str, ...] = (), **options: Any) -> AsyncIterator[Sandbox]:
        """``missing_apis``: resources (``group/version/plural``) the cluster does not serve
        in this sandbox; on ``real`` their CRDs are deleted for it and installed again after."""
        if backend == "real":
            plane = request.getfixturevalue("control_plane")
            with contextlib.ExitStack() as stack:
                for api in missing_apis:
                    group, _, plural = api.split("/")
                    stack.enter_context(plane.without_crd(f"{plural}.{group}"))
                async with RealSandbox(plane, **options) as sb:
                    yield sb
        else:
            emulator = options.pop("emulator", None)
            emulator = KilnEmulator() if emulator is None else emulator
            for api in missing_apis:
                del emulator.resources[api]
            async with Sandbox(emulator=emulator, **options) as sb:
                yield sb
    return make


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emulator_only(reason): a case the real back-end cannot run")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if "version" in _started:
        terminalreporter.write_line(f"real back-end: kube-apiserver {_started['version']} "
                                    "(tests/controlplane, k8s.io/kubernetes Go modules)")
