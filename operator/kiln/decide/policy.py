"""What the platform team decides for every tenant: the chart's values, as `kiln run` flags.

An LLMService author chooses every field of their service; these settings are the ones they
cannot choose. Each is off (empty) by default, and each refusal is a Stalled condition on the
service that names the setting to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from yarl import URL

from ..api import Reason
from ..errors import SpecInvalid
from ..render import Platform
from ..render.platform import DEFAULT_PLATFORM

__all__ = ["Policy", "base_url"]


def base_url(text: str, field: str = "spec.autoscaling.prometheusUrl") -> URL:
    """``text`` as a Prometheus base URL: scheme, host, port and path prefix, nothing else
    (the CRD's pattern refuses the rest up front; this also guards an older CRD)."""
    try:
        url = URL(text)
    except ValueError:
        url = URL()
    if any(c.isspace() or not c.isprintable() for c in text):
        url = URL()  # a space or a control character is in no base URL
    if url.scheme not in ("http", "https") or not url.host or url.user is not None \
            or url.password is not None or url.query_string or url.fragment or "?" in text or "#" in text:
        raise SpecInvalid(f"{field}: {text[:80]!r} is not a base URL "
                          "(http or https, a host, an optional port and path; no query, fragment "
                          "or credentials)")
    checked = url.with_path(url.path.rstrip("/") or "/")  # one form per URL, to compare with the list
    # KEDA is given the text as written, and Go's HTTP client sends its path as it is: a path
    # this form rewrites ('.' and '..' segments, escapes decoded) is compared as one path here
    # and may be routed as another by a proxy that does not normalize it (Envoy's default).
    if checked.raw_path.rstrip("/") != URL(text, encoded=True).raw_path.rstrip("/"):
        raise SpecInvalid(f"{field}: {text[:80]!r} has a path that normalizes to another "
                          f"({checked.raw_path[:80]!r}): no '.' or '..' segments, and no escaped "
                          "'/', '.' or other character that needs no escaping")
    return checked


@dataclass(frozen=True)
class Policy:
    # Model sources whose engines serve services without credentials of their own although
    # they were built with a token (chart: modelCredentials.publicModels).
    public_models: frozenset[str] = frozenset()
    # Prometheus base URLs services may name; empty: any (chart: prometheus.allowedUrls).
    prometheus_urls: tuple[str, ...] = ()
    # Whether a multi-node service may set spec.runtime.image: its leader's token may exec
    # into pods (chart: multiNode.customImages).
    multi_node_custom_images: bool = False
    # Whether the sweep of unreferenced LLMEngines also removes their cache entries
    # (chart: engineCache.deleteUnreferencedFiles; controller/collect.py).
    delete_unreferenced_engine_files: bool = False
    # Where builds reach the model stores (chart: modelStorage; the operator reads config.json
    # from the same Hub mirror) and the cluster's DNS domain (chart: clusterDomain).
    platform: Platform = DEFAULT_PLATFORM
    # namespace/name of the ConfigMap of the model list of each of ``model_list_gateways``
    # (chart: gateway.modelList; kiln/modellist.py). None: no list is kept.
    model_list: str | None = None
    model_list_gateways: tuple[str, ...] = ()

    def check_prometheus(self, text: str) -> URL:
        """The base URL, if the platform team allows it."""
        url = base_url(text)
        if self.prometheus_urls and url not in {base_url(allowed) for allowed in self.prometheus_urls}:
            raise SpecInvalid(
                f"spec.autoscaling.prometheusUrl: {str(url)[:80]} is not one of the Prometheus "
                f"endpoints this cluster allows ({', '.join(self.prometheus_urls)[:200]}); use one "
                "of those, or ask the platform team to add it to the chart's prometheus.allowedUrls",
                reason=Reason.SPEC_INVALID.value)
        return url
