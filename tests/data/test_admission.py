"""The admission rule, checked directly: no processes, no clocks."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ember.data._admission import (
    AdmissionPolicy,
    OperatorView,
    Snapshot,
    fits,
    node_capacities,
    node_room,
    task_slots,
)

MB = 1024 * 1024


def source(**kw: object) -> OperatorView:
    base: dict[str, object] = dict(compute="tasks", is_source=True, has_input=True, running=0,
                                   est_output_bytes=MB)
    base.update(kw)
    return OperatorView(**base)  # type: ignore[arg-type]


def mapper(**kw: object) -> OperatorView:
    base: dict[str, object] = dict(compute="tasks", is_source=False, has_input=False, running=0,
                                   est_output_bytes=MB, next_input_bytes=MB)
    base.update(kw)
    return OperatorView(**base)  # type: ignore[arg-type]


def pool(**kw: object) -> OperatorView:
    base: dict[str, object] = dict(compute="actors", is_source=False, has_input=False, running=0,
                                   est_output_bytes=MB, next_input_bytes=MB, actors_alive=2,
                                   min_actors=2, max_actors=2)
    base.update(kw)
    return OperatorView(**base)  # type: ignore[arg-type]


def snap(*ops: OperatorView, used: int = 0, cpus: float = 2, ready: int = 0,
         nodes: tuple[float, ...] = ()) -> Snapshot:
    return Snapshot(tuple(ops), used, sum(nodes) if nodes else cpus, ready, node_cpus=nodes)


def test_source_starts_when_idle() -> None:
    assert AdmissionPolicy(10 * MB).next_launch(snap(source())) == 0


def test_downstream_operator_goes_first() -> None:
    policy = AdmissionPolicy(10 * MB)
    assert policy.next_launch(snap(source(), mapper(has_input=True), used=MB)) == 1


def test_cpu_slots_bound_task_concurrency() -> None:
    policy = AdmissionPolicy(100 * MB)
    assert policy.next_launch(snap(source(running=1), used=2 * MB)) == 0
    assert policy.next_launch(snap(source(running=2), used=3 * MB)) is None
    # Two task operators share the machine's two CPU slots.
    assert policy.next_launch(snap(source(running=1), mapper(has_input=True, running=1),
                                   used=4 * MB)) is None


def test_memory_budget_stops_the_source() -> None:
    policy = AdmissionPolicy(4 * MB)
    # 3 MiB in flight + 1 MiB estimate fits, but the source must leave a block for the mapper.
    assert policy.next_launch(snap(source(), mapper(), used=3 * MB, ready=1)) is None
    assert policy.next_launch(snap(source(), mapper(), used=2 * MB, ready=1)) == 0


def test_liveness_when_nothing_runs_and_nothing_is_ready() -> None:
    policy = AdmissionPolicy(MB)
    huge = source(est_output_bytes=50 * MB)
    assert policy.next_launch(snap(huge, used=0)) == 0  # over budget, but the only way forward
    assert policy.next_launch(snap(huge, used=0, ready=1)) is None  # the consumer drains first


def test_unknown_source_size_runs_one_task_to_learn_it() -> None:
    policy = AdmissionPolicy(100 * MB)
    assert policy.next_launch(snap(source(est_output_bytes=None))) == 0
    assert policy.next_launch(snap(source(est_output_bytes=None, running=1))) is None


def test_actor_pool_as_large_as_the_machine_leaves_a_slot_for_reads() -> None:
    # Ray 2.5 hung here: two actors of one CPU each on two CPUs, and the read could never run.
    policy = AdmissionPolicy(100 * MB)
    ops = (source(), pool(actors_alive=2))
    assert policy.next_launch(snap(*ops)) == 0
    slots = task_slots(1.0, [2.0], held_by_actors=[1.0, 1.0])
    assert slots.reserved and slots.limit == 1 and slots.num_cpus == 0.0
    # ...but only one read at a time while the pool holds every CPU.
    assert policy.next_launch(snap(source(running=1), pool(actors_alive=2), used=MB)) is None


def test_actor_calls_bounded_per_actor() -> None:
    policy = AdmissionPolicy(100 * MB, actor_tasks_in_flight=2)
    done_source = source(has_input=False)
    assert policy.next_launch(snap(done_source, pool(has_input=True, running=3))) == 1
    assert policy.next_launch(snap(done_source, pool(has_input=True, running=4))) is None


def test_task_slots() -> None:
    assert task_slots(1.0, [4.0]).limit == 4
    assert task_slots(2.0, [4.0], [1.0]).limit == 1
    assert task_slots(0.5, [2.0]).limit == 4
    assert not task_slots(1.0, [2.0], [1.0]).reserved
    assert task_slots(0.0, [2.0], [1.0, 1.0]).num_cpus == 0.0


def test_task_slots_count_what_each_node_holds_not_the_cluster_total() -> None:
    # Two nodes with half a CPU free each: 1 CPU in all, but no node can run a 1-CPU task.
    # Counting the total made the executor submit a task that waited forever (the demo's
    # train stage on 2 nodes x 1 CPU).
    halves = task_slots(1.0, [0.5, 0.5])
    assert halves.reserved and halves.limit == 1 and halves.num_cpus == 0.0
    assert task_slots(0.5, [0.5, 0.5]).limit == 2
    assert task_slots(1.0, [1.5, 1.5]).limit == 2  # not 3
    # A pool actor takes its node's CPU: the task slot is on the other node.
    assert task_slots(1.0, [1.0, 1.0], [1.0]).limit == 1
    assert task_slots(1.0, [1.0, 1.0], [1.0, 1.0]).reserved


def test_a_running_task_and_a_new_one_must_each_fit_on_one_node() -> None:
    policy = AdmissionPolicy(100 * MB)
    # 1.5 CPUs on each of two nodes: one 1-CPU task per node, never a third.
    assert policy.next_launch(snap(source(running=1), used=MB, nodes=(1.5, 1.5))) == 0
    assert policy.next_launch(snap(source(running=2), used=2 * MB, nodes=(1.5, 1.5))) is None
    # Half a CPU on each node: one reserved task at a time.
    assert policy.next_launch(snap(source(), nodes=(0.5, 0.5))) == 0
    assert policy.next_launch(snap(source(running=1), used=MB, nodes=(0.5, 0.5))) is None


def test_a_pool_grows_only_while_a_node_has_room_for_one_more_actor() -> None:
    policy = AdmissionPolicy(100 * MB)
    saturated = pool(has_input=True, running=2, actors_alive=1, min_actors=1, max_actors=3)
    assert policy.actor_target(1, snap(source(), saturated, nodes=(1.0, 1.0))) == 2
    assert policy.actor_target(1, snap(source(), saturated, nodes=(1.5, 0.5))) == 1


def test_node_room_places_the_largest_requests_first() -> None:
    assert node_room([2.0, 1.0], [1.0, 1.0]) == [0.0, 1.0]
    assert node_room([1.0, 1.0], [1.5]) == [0.0, 1.0]  # fits nowhere: charged where most is left
    assert fits([1.0, 1.0], [1.0, 1.0]) and not fits([1.0, 1.0], [2.0])
    assert not fits([0.5, 0.5], [1.0]) and fits([0.5, 0.5], [0.5, 0.5])


def test_node_capacities_find_the_excluded_cpus_where_they_are_held() -> None:
    assert node_capacities([1.0, 1.0], [0.5, 0.5], 0.0) == (1.0, 1.0)  # nothing excluded
    # A trainer's 2 workers x 0.5 CPU, one on each node: half a node left on each.
    assert node_capacities([1.0, 1.0], [0.5, 0.5], 1.0) == (0.5, 0.5)
    # Excluded CPUs not held yet come off the node with the most left.
    assert node_capacities([2.0, 1.0], [2.0, 1.0], 1.0) == (1.0, 1.0)
    assert node_capacities([2.0], [2.0], 2.0) == (0.0,)


def test_autoscaling_grows_when_saturated_and_shrinks_when_drained() -> None:
    policy = AdmissionPolicy(100 * MB)
    grow = pool(has_input=True, running=2, actors_alive=1, min_actors=1, max_actors=3)
    assert policy.actor_target(1, snap(source(), grow, cpus=4)) == 2
    idle = pool(has_input=True, running=0, actors_alive=1, min_actors=1, max_actors=3)
    assert policy.actor_target(1, snap(source(), idle, cpus=4)) == 1
    at_max = pool(has_input=True, running=6, actors_alive=3, min_actors=1, max_actors=3)
    assert policy.actor_target(1, snap(source(), at_max, cpus=4)) == 3
    no_cpu = pool(has_input=True, running=4, actors_alive=2, min_actors=1, max_actors=3)
    assert policy.actor_target(1, snap(source(), no_cpu, cpus=2)) == 2
    drained = pool(input_done=True, running=1, actors_alive=3, min_actors=1, max_actors=3)
    assert policy.actor_target(1, snap(source(has_input=False), drained, cpus=4)) == 1
    assert policy.actor_target(1, snap(source(has_input=False),
                                       pool(input_done=True, running=0), cpus=4)) == 0
    below_min = pool(has_input=False, actors_alive=0, min_actors=2, max_actors=2)
    assert policy.actor_target(1, snap(source(), below_min)) == 2
    with pytest.raises(ValueError, match="runs tasks"):
        policy.actor_target(0, snap(source()))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="budget_bytes"):
        AdmissionPolicy(0)
    with pytest.raises(ValueError, match="actor_tasks_in_flight"):
        AdmissionPolicy(MB, actor_tasks_in_flight=0)


@given(
    budget_blocks=st.integers(1, 20), used_blocks=st.integers(0, 30),
    running=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    has_input=st.tuples(st.booleans(), st.booleans()), ready=st.integers(0, 2),
)
def test_decisions_respect_budget_and_slots(
    budget_blocks: int, used_blocks: int, running: tuple[int, int],
    has_input: tuple[bool, bool], ready: int,
) -> None:
    policy = AdmissionPolicy(budget_blocks * MB)
    ops = (source(has_input=has_input[0], running=running[0]),
           mapper(has_input=has_input[1], running=running[1]))
    snapshot = snap(*ops, used=used_blocks * MB, ready=ready)
    choice = policy.next_launch(snapshot)
    if choice is None:
        return
    assert ops[choice].has_input
    assert sum(op.running for op in ops) + 1 <= 2  # never more tasks than CPU slots
    within = used_blocks * MB + MB <= budget_blocks * MB
    liveness = all(op.running == 0 for op in ops) and ready == 0
    assert within or liveness


def test_exhaustive_small_pipelines_never_stall() -> None:
    """Whenever some operator has input and nothing runs and nothing waits for the consumer,
    the policy starts something: a pipeline can always make progress."""
    policy = AdmissionPolicy(3 * MB)
    for used, a, b, c in itertools.product(range(0, 8), [True, False], [True, False],
                                           [True, False]):
        ops = (source(has_input=a), mapper(has_input=b), pool(has_input=c))
        choice = policy.next_launch(snap(*ops, used=used * MB))
        if a or b or c:
            assert choice is not None, (used, a, b, c)
        else:
            assert choice is None


def test_a_task_operator_never_runs_more_tasks_than_its_concurrency() -> None:
    policy = AdmissionPolicy(64 * MB)
    capped = mapper(has_input=True, running=2, max_running=2)
    assert policy.next_launch(snap(source(has_input=False), capped, cpus=8)) is None
    assert policy.next_launch(snap(source(has_input=False), mapper(
        has_input=True, running=1, max_running=2), cpus=8)) == 1
    # The cap binds the operator, not the others: the read still starts.
    assert policy.next_launch(snap(source(), capped, cpus=8)) == 0


def test_data_context_refuses_a_negative_or_fractional_actor_block_retries() -> None:
    from ember.data import DataContext

    assert DataContext(actor_block_retries=0).actor_block_retries == 0  # fail at the first death
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"actor_block_retries=.* must be an int >= 0"):
            DataContext(actor_block_retries=bad)
