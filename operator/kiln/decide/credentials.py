"""Who may use an engine built with model credentials: the pure half of the credentials rule
(the operator reads the Secret in controller/credentials.py).

The namespace is the trust boundary: any service of the namespace may name any Secret the
chart lists there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import Reason
from ..api.llmservice import CREDENTIAL_KEYS
from ..errors import SpecInvalid
from .policy import Policy

__all__ = ["CREDENTIAL_KEYS", "SECRET_POLL_SECONDS", "Credentials", "check_engine_credentials",
           "check_secret_keys"]

# How soon a service waiting for its credentials Secret (or a key in it) reads it again:
# Secrets are not watched (that would need list and watch on every Secret).
SECRET_POLL_SECONDS = 5.0


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


def check_secret_keys(spec: Any, credentials: Credentials, namespace: str) -> None:
    """The Secret a service names holds every key its sources are read with: the build Job
    reads each by name (``secretKeyRef``), and a key the Secret lacks would leave its pod in
    CreateContainerConfigError, which names no field. ``spec``: an LLMServiceSpec."""
    if not credentials.found or spec.model.credentials is None:
        return
    sources = [("spec.model.source", spec.model.source)]
    if spec.model.calibration is not None:
        sources.append(("spec.model.calibration.source", spec.model.calibration.source))
    for field, source in sources:
        missing = [key for key in CREDENTIAL_KEYS.get(source.split("://", 1)[0], ())
                   if key not in credentials.keys]
        if missing:
            secret = spec.model.credentials.secret_name
            raise SpecInvalid(
                f"spec.model.credentials.secretName: Secret {namespace}/{secret} has no "
                f"{' and no '.join(missing)}, with which {field} ({source[:120]}) is read; add "
                f"{'them' if len(missing) > 1 else 'it'} to the Secret",
                reason=Reason.CREDENTIALS_REQUIRED.value, retry_after=SECRET_POLL_SECONDS)
