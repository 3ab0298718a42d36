"""The errors Kiln raises, as a small tree.

```
KilnError
├── SpecInvalid   permanent: the user must change the manifest; sets Stalled=True
│   └── PlanRefused   the planner's verdict on a well-formed manifest (does not fit, a GPU
│                     outside the catalog, a layout the model cannot take)
└── NotReadyYet   temporary: something Kiln waits for (a build, a rollout); retried with a delay
```

Messages name the object and the field path, e.g.
``spec.parallelism.tensor: 3 does not divide gpus=8``.
"""

from __future__ import annotations

__all__ = ["KilnError", "SpecInvalid", "PlanRefused", "NotReadyYet"]


class KilnError(Exception):
    """Base of every error Kiln raises on purpose."""

    reason: str = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class SpecInvalid(KilnError):
    """The manifest cannot work as written; retrying will not help, unless ``retry_after``
    says what it waits for outside the spec (a Secret to be created) may appear: the
    service is Stalled, and looked at again after that many seconds."""

    reason = "SpecInvalid"

    def __init__(self, message: str, *, reason: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class PlanRefused(SpecInvalid):
    """A manifest the CRD's schema and rules accept, refused by the planner: it does not fit its
    GPUs, TensorRT-LLM cannot build it, the model cannot take its layout, or its GPU is outside
    the catalog without the memory and architecture to plan with. Only the planner knows the
    model and the catalog, so the API server admits such a manifest and the operator stalls it
    with this message."""


class NotReadyYet(KilnError):
    """Something the reconcile depends on is still in progress."""

    reason = "Waiting"

    def __init__(self, message: str, *, reason: str | None = None, delay: float = 10.0) -> None:
        super().__init__(message, reason=reason)
        self.delay = delay
