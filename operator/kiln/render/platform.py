"""What the platform team sets for every service's objects (the chart's values, ``kiln run``
flags; never a tenant's field): where builds reach the model stores, the cluster's DNS
domain, and which Gateway implementation runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Platform", "DEFAULT_PLATFORM", "DEFAULT_CLUSTER_DOMAIN", "GATEWAY_PROVIDERS"]

# kubelet's --cluster-domain default, which most clusters keep.
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
# Gateway implementations that need an object of their own beside the route and the pool.
GATEWAY_PROVIDERS = ("istio",)


@dataclass(frozen=True)
class Platform:
    """``s3_endpoint``/``s3_region``: an S3-compatible store for s3:// sources (MinIO, Ceph;
    kiln-runtime's boto3 client reads ``AWS_ENDPOINT_URL``; the chart's modelStorage.s3).
    ``hub_endpoint``: a Hugging Face Hub mirror for hf:// sources (``HF_ENDPOINT``,
    huggingface_hub's ``constants.ENDPOINT``; modelStorage.hubEndpoint). None: AWS S3 and
    huggingface.co. ``cluster_domain``: the cluster's DNS domain (the chart's clusterDomain),
    in the names that must be fully qualified: an ExternalName's target, and the Host a client
    using the fully qualified name sends. ``gateway_provider``: the Gateway implementation
    that routes ``spec.gateway`` services (the chart's gateway.provider), where it needs an
    object of its own; "istio": a DestinationRule that has its proxies reach the endpoint
    picker over TLS (render.gateway). None: any other."""

    s3_endpoint: str | None = None
    s3_region: str | None = None
    hub_endpoint: str | None = None
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    gateway_provider: str | None = None

    def env(self, schemes: set[str]) -> list[dict[str, Any]]:
        """The build's environment for sources of these schemes."""
        values = []
        if "s3" in schemes:
            values += [("AWS_ENDPOINT_URL", self.s3_endpoint), ("AWS_DEFAULT_REGION", self.s3_region),
                       # A bucket a tenant names is read with the credentials it names, never
                       # with the node's instance role: botocore's IMDSFetcher (utils.py) asks
                       # the metadata service only while this is not "true".
                       ("AWS_EC2_METADATA_DISABLED", "true")]
        if "hf" in schemes:
            values.append(("HF_ENDPOINT", self.hub_endpoint))
        return [{"name": name, "value": value} for name, value in values if value]


# AWS S3, huggingface.co and cluster.local: with no setting.
DEFAULT_PLATFORM = Platform()
