"""Model credentials: the Secret a service names, and who may use an engine built with one.

The operator reads a credentials Secret by name only (the chart grants ``get`` on the names
in ``modelCredentials.secretNames``, nothing else), to plan a gated model from its config
and to know whether the service presents credentials at all. The namespace is the trust
boundary: any service of the namespace may name any Secret the chart lists there.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from ..api import Reason
from ..errors import SpecInvalid
from .kube import ApiException, KubeApi
from .policy import Policy

__all__ = ["CREDENTIAL_KEYS", "SECRET_POLL_SECONDS", "Credentials", "read_credentials",
           "check_engine_credentials"]

# How soon a service waiting for its credentials Secret reads it again.
SECRET_POLL_SECONDS = 5.0

# The keys a Secret must hold to be credentials for a source, by scheme.
CREDENTIAL_KEYS = {"hf": ("HF_TOKEN",), "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


@dataclass(frozen=True)
class Credentials:
    """What a service presents: whether it names a Secret, its HF token, the keys it holds."""

    found: bool
    token: str | None = None  # HF_TOKEN, for reading a gated model's config
    keys: frozenset[str] = frozenset()

    def cover(self, source: str) -> bool:
        """Whether these are credentials for ``source``'s kind of store."""
        wanted = CREDENTIAL_KEYS.get(source.split("://", 1)[0], ())
        return self.found and bool(wanted) and set(wanted) <= self.keys


async def read_credentials(api: KubeApi, namespace: str, secret: str | None) -> Credentials:
    if not secret:
        return Credentials(found=False)
    try:
        obj = await api.get("v1", "Secret", secret, namespace)
    except ApiException as error:
        if error.status != 403:
            raise
        # The chart lets the operator read Secrets by name only (modelCredentials.secretNames).
        raise SpecInvalid(
            f"spec.model.credentials.secretName: the operator may not read Secret "
            f"{namespace}/{secret}; name one of the Secrets the platform team allows (the chart's "
            "modelCredentials.secretNames), or ask them to add this name",
            reason=Reason.CREDENTIALS_REQUIRED.value) from None
    if obj is None:
        # Secrets are not watched (that would need list and watch on every Secret): the
        # service is looked at again soon instead of at the next resync.
        raise SpecInvalid(f"spec.model.credentials.secretName: Secret {namespace}/{secret} "
                          "not found; create it with the key HF_TOKEN (hf://) or AWS_ACCESS_KEY_ID"
                          " and AWS_SECRET_ACCESS_KEY (s3://)", reason=Reason.MISSING_DEPENDENCY.value,
                          retry_after=SECRET_POLL_SECONDS)
    data = obj.get("data") or {}
    value = data.get("HF_TOKEN")
    return Credentials(found=True, token=base64.b64decode(value).decode() if value else None,
                        keys=frozenset(k for k, v in data.items() if v))


def check_engine_credentials(live: dict[str, Any], credentials: Credentials, policy: Policy,
                              name: str) -> None:
    """An engine built with credentials is served only to services that present credentials
    for the same source, unless the platform team made the model public: otherwise naming the
    same model would be enough to serve a gated model's weights without access to it."""
    spec = live.get("spec") or {}
    source = str(spec.get("modelSource") or "")
    if source.split("://", 1)[0] not in CREDENTIAL_KEYS:
        return  # a pvc:// model is read through the namespace's own claim
    if not spec.get("credentialsSecret") or source in policy.public_models or credentials.cover(source):
        return
    keys = " and ".join(CREDENTIAL_KEYS.get(source.split("://", 1)[0], ("credentials",)))
    raise SpecInvalid(
        f"spec.model.credentials: engine {name} was built from {source[:120]} with credentials; "
        f"this service presents none for it. Set spec.model.credentials.secretName to a Secret "
        f"with {keys} for that model, or ask the platform team to list the model as public "
        "(the chart's modelCredentials.publicModels)", reason=Reason.CREDENTIALS_REQUIRED.value)
