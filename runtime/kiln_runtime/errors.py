"""The two ways a runtime command fails: bad input (exit 2) and a failed step (exit 1)."""

from __future__ import annotations

__all__ = ["BadSpec", "StepFailed"]


class BadSpec(ValueError):
    """The spec cannot be built as given; the message names the field and what to do."""


class StepFailed(RuntimeError):
    """A build step failed; the message names the step."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step!r} failed: {message}")
        self.step = step
