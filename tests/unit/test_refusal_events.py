"""What a refused pod's Events may put in a service's status: written by anyone who may post
Events in the namespace, so one line of printable text, bounded, and never a forged date
that outranks the controller's own Event."""

from __future__ import annotations

import asyncio

from kiln.controller.cache import UNSCHEDULABLE_MESSAGE_CHARS
from kiln.controller.gather import _build_refusal, _group_refusal

NOW = "2026-06-01T12:00:00Z"
JOB = {"metadata": {"name": "e-build", "namespace": "llm", "uid": "job-uid"}}
REAL = 'Error creating: pods "e-build-x" is forbidden: exceeded quota: team-gpus'


class _Events:
    def __init__(self, events):
        self.events = events

    async def list(self, api_version, kind, namespace=None, label_selector=None, field_selector=None):
        assert (api_version, kind, namespace) == ("v1", "Event", "llm")
        return self.events  # as if the server ignored the field selector: the operator filters too


def _event(message, at, uid="job-uid", reason="FailedCreate", kind="Job", name="e-build"):
    return {"involvedObject": {"kind": kind, "name": name, "uid": uid}, "reason": reason, "message": message,
            "lastTimestamp": at}


def _build(events):
    return asyncio.run(_build_refusal(_Events(events), JOB, NOW))


def test_the_controllers_refusal_is_said():
    assert _build([_event(REAL, "2026-06-01T11:59:00Z")]) == REAL


def test_a_forged_event_dated_in_the_future_does_not_hide_the_real_refusal():
    forged = _event("Error creating: all fine", "2999-01-01T00:00:00Z")
    assert _build([_event(REAL, "2026-06-01T11:59:00Z"), forged]) == REAL


def test_control_characters_and_bidi_overrides_are_dropped_and_the_length_is_bounded():
    said = _build([_event("Error creating: \x1b[2J\x1b[31mall fine\x00 ok\x07 \u202e" + "A" * 100_000,
                          "2026-06-01T11:59:30Z")])
    assert said.startswith("Error creating: [2J[31mall fine ok ")
    assert all(ch.isprintable() for ch in said) and len(said) == UNSCHEDULABLE_MESSAGE_CHARS


def test_events_of_other_objects_or_reasons_are_not_read():
    assert _build([_event(REAL, "2026-06-01T11:59:00Z", uid="other"),
                   _event(REAL, "2026-06-01T11:59:00Z", reason="SuccessfulCreate")]) is None


def test_a_groups_refusal_is_read_from_its_own_statefulsets_recent_events_only():
    def group(events):
        return asyncio.run(_group_refusal(_Events(events), "llm", "g", NOW))
    said = "create Pod g-0 in StatefulSet g failed error: violates PodSecurity"
    assert group([_event(said, "2026-06-01T11:59:00Z", kind="StatefulSet", name="g")]) == said
    assert group([_event(said, "2026-06-01T11:59:00Z", kind="StatefulSet", name="g-3")]) == said
    assert group([_event(said, "2026-06-01T11:59:00Z", kind="StatefulSet", name="g-x"),
                  _event(said, "2026-06-01T11:59:00Z", kind="StatefulSet", name="other-0"),
                  _event(said, "2026-06-01T10:00:00Z", kind="StatefulSet", name="g")]) is None
