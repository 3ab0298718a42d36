from kiln.decide.conditions import get_condition, is_true, set_condition


def test_new_condition_is_appended_with_transition_time():
    conditions = set_condition([], "Ready", False, "EngineBuilding", "building", "t1", 3)
    assert conditions == [{"type": "Ready", "status": "False", "reason": "EngineBuilding",
                           "message": "building", "lastTransitionTime": "t1", "observedGeneration": 3}]


def test_transition_time_moves_only_when_status_flips():
    first = set_condition([], "Ready", False, "EngineBuilding", "building", "t1")
    same = set_condition(first, "Ready", False, "RollingOut", "0/1 ready", "t2")
    assert get_condition(same, "Ready")["lastTransitionTime"] == "t1"
    assert get_condition(same, "Ready")["reason"] == "RollingOut"
    flipped = set_condition(same, "Ready", True, "ReplicasReady", "1/1 ready", "t3")
    assert get_condition(flipped, "Ready")["lastTransitionTime"] == "t3"
    assert is_true(flipped, "Ready")


def test_order_is_kept_and_input_not_mutated():
    conditions = set_condition([], "Ready", None, "Pending", "", "t1")
    conditions = set_condition(conditions, "Stalled", False, "Pending", "", "t1")
    before = [dict(c) for c in conditions]
    updated = set_condition(conditions, "Ready", True, "ReplicasReady", "", "t2")
    assert [c["type"] for c in updated] == ["Ready", "Stalled"]
    assert conditions == before
    assert get_condition(conditions, "Ready")["status"] == "Unknown"
