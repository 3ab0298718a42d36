"""The operator-at-scale benchmark's services are ones Kiln serves: every one can become Ready."""

from __future__ import annotations

import sys
from collections import Counter

from kiln.api.validation import parse_service_manifest

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import operator_scale  # noqa: E402


def test_no_two_services_claim_one_model_name_on_one_gateway():
    """One served model name per Gateway (decide/claim.py): copies of the Gateway example under
    one name would leave all but the first stalled (ModelNameInUse), and the run never all Ready."""
    claims = Counter()
    for manifest in operator_scale._services(1000):
        _, spec = parse_service_manifest(manifest)
        if spec.gateway is not None:
            gateway = f"{spec.gateway.namespace or manifest['metadata']['namespace']}/{spec.gateway.name}"
            claims[(gateway, spec.served_model_name or manifest["metadata"]["name"])] += 1
    assert claims and max(claims.values()) == 1
