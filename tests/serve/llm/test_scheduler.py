"""``Scheduler``: which waiting requests join the running batch between steps (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ember.serve.llm._scheduler import Scheduler


def test_requests_join_in_arrival_order_up_to_max_num_seqs() -> None:
    s = Scheduler(max_num_seqs=2)
    for key in "abc":
        assert s.add(key, 10)
    assert s.admit() == ["a", "b"]
    assert s.admit() == []  # full
    assert s.remove("a") == "running"
    assert s.admit() == ["c"]
    assert (s.running, s.waiting) == (2, 0)


def test_one_step_prefills_at_most_max_prefill_tokens_but_always_one_prompt() -> None:
    s = Scheduler(max_num_seqs=8, max_prefill_tokens=100)
    s.add("long", 500)
    s.add("a", 60)
    s.add("b", 60)
    s.add("c", 10)
    assert s.admit() == ["long"]  # too long for the budget, but alone it goes
    assert s.admit() == ["a"]  # b would pass the budget; c may not overtake it
    assert s.admit() == ["b", "c"]


def test_past_max_waiting_beyond_the_free_places_a_request_is_refused() -> None:
    s = Scheduler(max_num_seqs=2, max_waiting=1)
    assert s.add("a", 1) and s.add("b", 1)  # both fit in the batch
    assert s.add("c", 1)  # waits for a place
    assert not s.add("d", 1)
    s.admit()
    assert not s.add("d", 1)  # a and b run, c waits
    s.remove("a")
    assert s.add("d", 1)  # a place is free for c, so d may wait


def test_max_waiting_zero_takes_only_what_fits_in_the_batch() -> None:
    s = Scheduler(max_num_seqs=1, max_waiting=0)
    assert s.add("a", 1)
    assert not s.add("b", 1)
    s.admit()
    assert not s.add("b", 1)
    s.remove("a")
    assert s.add("b", 1)


def test_removing_tells_where_the_request_was() -> None:
    s = Scheduler(max_num_seqs=1)
    s.add("a", 1)
    s.add("b", 1)
    s.admit()
    assert s.remove("b") == "waiting"
    assert s.remove("a") == "running"
    assert s.remove("a") is None


def test_a_key_cannot_be_queued_twice() -> None:
    s = Scheduler()
    s.add("a", 1)
    with pytest.raises(ValueError, match="already queued"):
        s.add("a", 1)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_num_seqs": 0}, "max_num_seqs=0"), ({"max_prefill_tokens": 0}, "max_prefill_tokens=0"),
    ({"max_waiting": -1}, "max_waiting=-1")])
def test_bad_settings_name_the_value(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scheduler(**kwargs)


@given(st.integers(1, 4), st.integers(1, 50), st.lists(st.tuples(
    st.sampled_from(["add", "admit", "finish", "cancel"]), st.integers(1, 80)), max_size=60))
def test_never_more_than_max_num_seqs_and_never_overtaken(
        max_num_seqs: int, budget: int, script: list[tuple[str, int]]) -> None:
    s = Scheduler(max_num_seqs=max_num_seqs, max_waiting=10, max_prefill_tokens=budget)
    order: list[int] = []  # the keys that joined, in the order they joined
    waiting: list[int] = []
    running: list[int] = []
    for n, (action, value) in enumerate(script):
        if action == "add":
            if s.add(n, value):
                waiting.append(n)
            else:
                assert len(waiting) - max(0, max_num_seqs - len(running)) == 10
        elif action == "admit":
            joined = s.admit()
            assert joined == waiting[:len(joined)]  # oldest first, none overtaken
            if waiting and len(running) < max_num_seqs:
                assert joined, "a free place and a waiting request, but nobody joined"
            del waiting[:len(joined)]
            running += joined
            order += joined
        elif action == "finish" and running:
            assert s.remove(running.pop(value % len(running))) == "running"
        elif action == "cancel" and waiting:
            assert s.remove(waiting.pop(value % len(waiting))) == "waiting"
        assert s.running == len(running) <= max_num_seqs
        assert s.waiting == len(waiting)
    assert order == sorted(order)
