"""``ember.util``: placement groups and gangs on the local backend (one node: an up-front check,
nothing to reserve), the public names, and the rule that no library imports another."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

import ember
import ember.util
import ember.util.scheduling_strategies
from ember.errors import GetTimeoutError, ResourceError
from ember.util import PlacementGroup, create_gang, placement_group, remove_placement_group
from ember.util._gang import await_placement
from ember.util.scheduling_strategies import PlacementGroupSchedulingStrategy


def test_util_all_is_pinned():
    # ember.util.__all__ itself is pinned in tests/test_exported_members.py
    assert ember.util.scheduling_strategies.__all__ == ["NodeAffinitySchedulingStrategy",
                                                        "PlacementGroupSchedulingStrategy"]
    assert ember.train.WorkerGroup is ember.util.WorkerGroup  # where train users found it


def test_rl_imports_no_other_library():
    code = ("import sys, json, ember.rl; "
            "print(json.dumps(sorted(m for m in ('ember.train', 'ember.data', 'ember.serve') "
            "if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == []


def test_a_local_placement_group_is_checked_against_the_machine(ember_local):
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    assert pg.wait(0) and ember.get(pg.ready()) == pg
    assert (pg.bundle_specs, pg.bundle_count, pg.strategy) == ([{"CPU": 1.0}] * 2, 2, "PACK")

    @ember.remote
    class Member:
        def ping(self):
            return "pong"

    member = Member.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=0)).remote()
    assert ember.get(member.ping.remote(), timeout=30) == "pong"
    remove_placement_group(pg)
    with pytest.raises(ResourceError, match=r"3 x {CPU: 1}, and the whole cluster holds 2"):
        placement_group([{"CPU": 1}] * 3)
    with pytest.raises(ResourceError, match="STRICT_SPREAD needs 2 nodes"):
        placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
    with pytest.raises(ValueError, match="strategy='TIGHT' must be one of"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="non-empty list"):
        placement_group([])


def test_gang_members_that_ask_for_nothing_need_no_reservation(ember_local):
    @ember.remote
    class Member:
        def ping(self):
            return "pong"

    gang = create_gang(Member, 3, resources_per_member={})
    try:
        assert gang.placement_group is None
        assert ember.get([m.ping.remote() for m in gang], timeout=30) == ["pong"] * 3
    finally:
        gang.shutdown()
    with pytest.raises(ResourceError, match="CPU"):
        create_gang(Member, 3, resources_per_member={"CPU": 1})


class _NeverReady(PlacementGroup):
    """A group whose reservation never comes (a busy cluster), on a fake clock."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__("g", [{"CPU": 1.0}] * 2, "PACK")
        self.clock = clock

    def wait(self, timeout_seconds: float = 30) -> bool:
        self.clock[0] += timeout_seconds
        return False


def test_a_gang_that_waits_says_what_for_after_the_grace_period_then_gives_up(
        ember_local, caplog):
    clock = [0.0]
    with caplog.at_level(logging.WARNING, logger="ember"), \
            pytest.raises(GetTimeoutError) as info:
        await_placement(_NeverReady(clock), "a gang of 2 Learner actors", timeout=100,
                        grace_s=10, clock=lambda: clock[0])

    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # after the grace period, then a minute later
    assert "a gang of 2 Learner actors (2 x {'CPU': 1.0}, PACK) has waited 10 s" in warnings[0]
    assert "CPU 2 free of 2" in warnings[0] and "nothing is held meanwhile" in warnings[0]
    assert "has waited 100 s" in str(info.value) and "CPU 2 free of 2" in str(info.value)


def test_ray_s_module_name_imports_and_the_function_still_makes_groups(ember_local):
    # `from ray.util.placement_group import ...` is how Ray's docs import these; afterwards
    # `ray.util.placement_group(...)` still makes a group (there the function shadows the
    # module; here the module can be called).
    import ember.util.placement_group as module
    from ember.util.placement_group import get_current_placement_group, placement_group_table

    assert get_current_placement_group is ember.util.get_current_placement_group
    pg = ember.util.placement_group([{"CPU": 1}], name="by-module")
    assert isinstance(pg, PlacementGroup) and module.get_placement_group("by-module") == pg
    assert placement_group_table(pg)["state"] == "CREATED"
    with pytest.raises(ValueError, match="non-empty"):
        module.get_placement_group("")
    with pytest.raises(TypeError, match="PlacementGroup"):
        placement_group_table("by-module")
