"""What a test cluster gets installed besides Kiln's CRDs: the chart's RBAC and third-party CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

__all__ = ["chart_rbac", "third_party_crds"]

ROOT = Path(__file__).resolve().parents[2]
# LeaderWorkerSet (multi-node services), KEDA (autoscaling.mode: keda), the Gateway API and
# Inference Extension (spec.gateway) and Istio's DestinationRule (gateway.provider: istio), copied
# from their releases (tests/support/schemas/README.md).
THIRD_PARTY_CRDS = ["leaderworkerset.x-k8s.io_leaderworkersets.yaml", "keda.sh_scaledobjects.yaml",
                    "http.keda.sh_httpscaledobjects.yaml", "monitoring.coreos.com_podmonitors.yaml",
                    "gateway.networking.k8s.io_httproutes.yaml",
                    "inference.networking.k8s.io_inferencepools.yaml",
                    "networking.istio.io_destinationrules.yaml"]


def chart_manifests(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders for a release ``kiln`` in ``kiln-system``."""
    manifests = helm.Chart.load(ROOT / "charts" / "kiln").render(values or {}, name="kiln",
                                                                   namespace="kiln-system")
    return [d for path, text in manifests.items() if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]


def chart_rbac(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC objects (cluster-wide mode unless ``values`` say)."""
    return [o for o in chart_manifests(values)
            if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]


def third_party_crds() -> list[dict[str, Any]]:
    schemas = ROOT / "tests" / "support" / "schemas"
    return [d for name in THIRD_PARTY_CRDS for d in yaml.safe_load_all((schemas / name).read_text()) if d]
