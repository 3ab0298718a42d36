"""Model credentials: the Secret a service names, read by name only.

The operator reads a credentials Secret by name only (the chart grants ``get`` on the names
in ``modelCredentials.secretNames``, nothing else), to plan a gated model from its config
and to know whether the service presents credentials at all; who may use an engine built with
them is decided in decide/credentials.py.
"""

from __future__ import annotations

import base64

from ..api import Reason
from ..decide.credentials import SECRET_POLL_SECONDS, Credentials
from ..errors import SpecInvalid
from .kube import ApiException, KubeApi

__all__ = ["SECRET_POLL_SECONDS", "read_credentials"]


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
    try:
        token = base64.b64decode(value).decode() if value else None
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        raise SpecInvalid(f"spec.model.credentials.secretName: Secret {namespace}/{secret}: HF_TOKEN is not "
                          "UTF-8 text; write the Hugging Face token itself there",
                          reason=Reason.CREDENTIALS_REQUIRED.value, retry_after=SECRET_POLL_SECONDS) from None
    return Credentials(found=True, token=token, keys=frozenset(k for k, v in data.items() if v))
