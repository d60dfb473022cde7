"""The redeploy policy: how many old replicas keep serving while the new version comes up."""

from __future__ import annotations

from ember.serve._rollout import old_replicas_serving


def test_one_replica_makes_way_at_once() -> None:
    assert old_replicas_serving(1, 0, True) == 0


def test_a_fifth_of_the_target_makes_way_first_then_one_more_per_new_replica() -> None:
    assert old_replicas_serving(10, 0, True) == 8
    assert [old_replicas_serving(10, up, True) for up in range(11)] == [
        8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]
    assert old_replicas_serving(4, 0, True) == 3  # below 5 replicas: one at a time


def test_while_new_replicas_are_missing_old_and_new_leave_room_for_one_more() -> None:
    for target in range(1, 30):
        for up in range(target):
            assert old_replicas_serving(target, up, True) + up <= target - 1


def test_none_serves_once_the_new_version_is_up_failed_or_gone() -> None:
    assert old_replicas_serving(10, 10, False) == 0
    assert old_replicas_serving(10, 3, False) == 0  # failed to deploy
