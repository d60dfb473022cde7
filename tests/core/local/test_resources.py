"""``ember/core/local/_resources.py``: the local scheduler's resource bookkeeping (pure)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from ember.core.local._resources import ResourcePool, local_request
from ember.util.scheduling_strategies import NodeAffinitySchedulingStrategy

EPS = 1e-6


def pool(cpus=4.0, gpus=("0", "1"), **custom):
    return ResourcePool({"CPU": cpus, **custom}, gpu_ids=gpus)


# -- feasibility ----------------------------------------------------------------------------


def test_totals_count_the_gpu_devices():
    p = pool(cpus=8, gpus=("0", "1", "2"), widget=2)

    assert p.totals == {"CPU": 8.0, "GPU": 3.0, "widget": 2.0}
    assert p.snapshot() == p.totals


@pytest.mark.parametrize(
    "request_",
    [{}, {"CPU": 4}, {"GPU": 2}, {"GPU": 0.5}, {"CPU": 0.25, "widget": 2}, {"GPU": 1.0}],
)
def test_requests_within_the_totals_are_feasible(request_):
    assert pool(widget=2).infeasible_reason(request_) is None


def test_too_many_cpus_names_both_numbers_and_the_cluster():
    reason = pool(widget=2).infeasible_reason({"CPU": 6})

    assert reason is not None and reason.startswith(
        "it asks for CPU=6 but the cluster has 4 in total (cluster: CPU=4, GPU=2, widget=2). "
        "Ask for less, or start ember with more")


def test_memory_is_shown_in_gib():
    reason = pool(memory=4 * 2**30).infeasible_reason({"memory": 6 * 2**30})

    assert reason is not None and "memory=6 GiB" in reason and "has 4 GiB in total" in reason


@pytest.mark.parametrize(
    ("options", "request_"),
    [
        ({"num_cpus": 1, "scheduling_strategy": NodeAffinitySchedulingStrategy("local", False)},
         {"CPU": 1.0}),
        ({"num_cpus": 1, "scheduling_strategy": NodeAffinitySchedulingStrategy("ab" * 28, True)},
         {"CPU": 1.0}),
        ({"memory": 2**30}, {"memory": float(2**30)}),
    ],
)
def test_work_that_may_run_here_asks_for_its_resources_only(options, request_):
    assert local_request(options) == request_
    assert pool(memory=2.0**31).infeasible_reason(local_request(options)) is None


def test_a_hard_affinity_to_another_node_can_never_run_and_says_how_to_let_it():
    request = local_request({"num_cpus": 1, "scheduling_strategy":
                             NodeAffinitySchedulingStrategy("ab" * 28, soft=False)})
    reason = pool().infeasible_reason(request)

    assert reason is not None and "ab" * 28 in reason and "soft=True" in reason


def test_unknown_resource_has_a_total_of_zero():
    reason = pool().infeasible_reason({"unobtainium": 1})

    assert reason is not None and "unobtainium=1" in reason and "has 0 in total" in reason


def test_more_gpus_than_exist_is_infeasible():
    reason = pool().infeasible_reason({"GPU": 3})

    assert reason is not None and "GPU=3" in reason and "has 2 in total" in reason


def test_fraction_of_more_than_one_gpu_is_infeasible():
    reason = pool(gpus=("0", "1", "2")).infeasible_reason({"GPU": 1.5})

    assert reason is not None and "whole number" in reason


def test_machine_without_gpus_cannot_run_a_gpu_request():
    assert pool(gpus=()).infeasible_reason({"GPU": 0.5}) is not None


# -- acquiring and releasing ----------------------------------------------------------------


def test_acquire_takes_and_release_gives_back():
    p = pool(widget=2)
    request = {"CPU": 1.5, "widget": 1}

    assert p.fits(request)
    assert p.acquire(request) == ()
    assert p.snapshot() == {"CPU": 2.5, "GPU": 2.0, "widget": 1.0}
    p.release(request)
    assert p.snapshot() == p.totals


def test_request_that_does_not_fit_now_waits():
    p = pool(cpus=2)
    p.acquire({"CPU": 2})

    assert not p.fits({"CPU": 0.5})
    assert p.fits({})
    assert p.fits({"GPU": 1})


def test_whole_gpu_requests_get_distinct_devices():
    p = pool(gpus=("0", "1", "2"))

    first = p.acquire({"GPU": 1})
    second = p.acquire({"GPU": 2})

    assert len(first) == 1 and len(second) == 2
    assert set(first) | set(second) == {"0", "1", "2"}
    assert not p.fits({"GPU": 1})
    assert not p.fits({"GPU": 0.1})


def test_released_gpus_are_handed_out_again():
    p = pool()
    ids = p.acquire({"GPU": 2})

    p.release({"GPU": 2}, ids)

    assert sorted(p.acquire({"GPU": 2})) == ["0", "1"]


def test_fractional_requests_share_one_device():
    p = pool()

    first = p.acquire({"GPU": 0.5})
    second = p.acquire({"GPU": 0.5})

    assert first == second
    assert p.fits({"GPU": 1})  # the other device is untouched
    assert p.snapshot()["GPU"] == 1.0


def test_fractions_pack_onto_the_fullest_device_that_fits():
    p = pool()
    quarter = p.acquire({"GPU": 0.25})
    half = p.acquire({"GPU": 0.7})  # cannot share with anything else: goes beside the quarter

    assert half == quarter
    third = p.acquire({"GPU": 0.5})  # does not fit beside them: the other device

    assert third != quarter
    assert not p.fits({"GPU": 1})


def test_fraction_that_fits_no_single_device_waits():
    p = pool()
    p.acquire({"GPU": 0.7})
    p.acquire({"GPU": 0.7})

    assert p.snapshot()["GPU"] == pytest.approx(0.6)
    assert not p.fits({"GPU": 0.5})  # 0.6 free in total, but only 0.3 on each device


def test_whole_gpu_cannot_take_a_partly_used_device():
    p = pool()
    shared = p.acquire({"GPU": 0.5})

    whole = p.acquire({"GPU": 1})

    assert whole != shared
    assert not p.fits({"GPU": 1})


def test_acquire_of_a_request_that_does_not_fit_raises():
    p = pool()
    p.acquire({"GPU": 2})

    with pytest.raises(RuntimeError, match="does not fit"):
        p.acquire({"GPU": 1})


def test_release_never_raises_available_above_the_total():
    p = pool(widget=2)

    p.release({"CPU": 3, "widget": 1})

    assert p.snapshot() == p.totals


# -- lending the CPUs of a task blocked in get -------------------------------------------------


def test_blocked_task_lends_its_cpus_and_takes_them_back():
    p = pool(cpus=1)
    request = {"CPU": 1}
    p.acquire(request)

    p.lend_cpus(request)
    assert p.fits({"CPU": 1})
    child = {"CPU": 1}
    p.acquire(child)

    p.reclaim_cpus(request)  # overcommitted until the child finishes
    assert not p.fits({"CPU": 0.5})
    assert p.snapshot()["CPU"] == 0.0  # never reported below zero
    p.release(child)
    p.release(request)
    assert p.snapshot() == p.totals


def test_lending_a_request_without_cpus_changes_nothing():
    p = pool()

    p.lend_cpus({"GPU": 1})
    p.reclaim_cpus({"widget": 1})

    assert p.snapshot() == p.totals


# -- any sequence of acquire and release keeps the books straight ------------------------------


AMOUNTS = st.sampled_from([0.1, 0.25, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0])


class PoolMachine(RuleBasedStateMachine):
    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        self.pool = ResourcePool({"CPU": 4.0, "widget": 3.0}, gpu_ids=("0", "1", "2"))
        self.grants: dict[int, tuple[dict[str, float], tuple[str, ...]]] = {}
        self.next_id = 0

    @rule(target=held, cpus=AMOUNTS, gpus=st.sampled_from([0, 0.25, 0.5, 0.75, 1, 2, 3]),
          widgets=st.sampled_from([0, 1, 2]))
    def acquire(self, cpus, gpus, widgets):
        request = {"CPU": cpus}
        if gpus:
            request["GPU"] = float(gpus)
        if widgets:
            request["widget"] = float(widgets)
        if not self.pool.fits(request):
            return None
        ids = self.pool.acquire(request)
        expected = 0 if not gpus else (1 if gpus < 1 else int(gpus))
        assert len(ids) == expected and len(set(ids)) == len(ids)
        self.next_id += 1
        self.grants[self.next_id] = (request, ids)
        return self.next_id

    @rule(grant=consumes(held))
    def release(self, grant):
        if grant is None:
            return
        request, ids = self.grants.pop(grant)
        self.pool.release(request, ids)

    @invariant()
    def amounts_add_up(self):
        for key, total in self.pool.totals.items():
            used = sum(req.get(key, 0.0) for req, _ in self.grants.values())
            assert self.pool.available[key] == pytest.approx(total - used, abs=EPS)
            assert -EPS <= self.pool.available[key] <= total + EPS

    @invariant()
    def no_device_is_oversubscribed(self):
        load = {gpu: 0.0 for gpu in ("0", "1", "2")}
        whole_owners: dict[str, int] = {}
        for grant, (req, ids) in self.grants.items():
            share = 1.0 if req.get("GPU", 0) >= 1 else req.get("GPU", 0)
            for gpu in ids:
                load[gpu] += share
                if share == 1.0:
                    assert gpu not in whole_owners
                    whole_owners[gpu] = grant
        assert all(v <= 1.0 + EPS for v in load.values()), load

    def teardown(self):
        for request, ids in self.grants.values():
            self.pool.release(request, ids)
        assert self.pool.snapshot() == pytest.approx(self.pool.totals)
        assert self.pool.fits({"CPU": 4.0, "GPU": 3.0, "widget": 3.0})


PoolMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30,
                                         deadline=None)
TestResourcePoolSequences = PoolMachine.TestCase
