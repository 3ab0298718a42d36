"""The Kubernetes minors the chart claims (Chart.yaml ``kubeVersion``), for validating every
built-in object against each one's schema with kubernetes-validate."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from kubernetes_validate.utils import all_versions

__all__ = ["claimed_minors", "validate_on_claimed_minors"]

CHART = Path(__file__).resolve().parents[2] / "charts" / "kiln" / "Chart.yaml"


@functools.cache
def claimed_minors() -> tuple[str, ...]:
    """From the chart's lower bound to the newest minor kubernetes-validate has schemas for."""
    claim = yaml.safe_load(CHART.read_text())["kubeVersion"]
    bound = re.fullmatch(r">=\s*1\.(\d+)\.\d+(-0)?", claim)
    assert bound, f"Chart.yaml kubeVersion {claim!r}: expected '>=1.N.0-0'"
    lowest = int(bound[1])
    minors = sorted({int(v.split(".")[1]) for v in all_versions() if v.startswith("1.")})
    return tuple(f"1.{m}" for m in minors if m >= lowest)


def validate_on_claimed_minors(obj: dict[str, Any]) -> None:
    """Raise kubernetes-validate's error (naming the minor) when any claimed minor refuses it."""
    for minor in claimed_minors():
        try:
            kubernetes_validate.validate(obj, minor, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"Kubernetes {minor} refuses {obj['kind']} "
                                 f"{obj['metadata'].get('name')}: {error.message}") from None
