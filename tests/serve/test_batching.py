"""``@serve.batch``: the batch-forming rule (pure, fake clock) and the decorator's behaviour."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ember import serve
from ember.serve._batching import BatchPolicy
from ember.serve._multiplex import set_multiplexed_model_id

# -- the rule, by example ----------------------------------------------------------------------


def test_a_full_batch_starts_at_once_and_takes_the_oldest_calls() -> None:
    p = BatchPolicy(max_batch_size=3, batch_wait_timeout_s=10)
    for key in "abcd":
        p.arrive(key, 0)
    assert p.next_batch(0) == ["a", "b", "c"]
    assert p.waiting == 1 and p.running == 1


def test_a_partial_batch_waits_for_the_timeout_from_the_oldest_arrival() -> None:
    p = BatchPolicy(max_batch_size=3, batch_wait_timeout_s=5)
    p.arrive("a", 1)
    p.arrive("b", 3)
    assert p.wake_at() == 6
    assert p.next_batch(5.9) is None
    assert p.next_batch(6) == ["a", "b"]
    assert p.wake_at() is None


def test_zero_timeout_starts_whatever_waits() -> None:
    p = BatchPolicy(max_batch_size=8, batch_wait_timeout_s=0)
    p.arrive("a", 2)
    assert p.next_batch(2) == ["a"]


def test_no_batch_starts_while_every_slot_is_busy_and_the_wait_restarts_when_one_frees() -> None:
    p = BatchPolicy(max_batch_size=2, batch_wait_timeout_s=5, max_concurrent_batches=1)
    p.arrive("a", 0)
    p.arrive("b", 0)
    assert p.next_batch(0) == ["a", "b"]
    p.arrive("c", 1)
    assert p.wake_at() is None and p.next_batch(100) is None  # the slot is busy
    p.batch_finished(20)
    # c waited long enough already, but could not run: it gets the full window from the moment
    # the slot freed, to gather batch-mates
    assert p.wake_at() == 25
    assert p.next_batch(24) is None
    p.arrive("d", 24)
    assert p.next_batch(24) == ["c", "d"]  # full: at once


def test_concurrent_batches_up_to_the_limit() -> None:
    p = BatchPolicy(max_batch_size=1, batch_wait_timeout_s=0, max_concurrent_batches=2)
    for key in "abc":
        p.arrive(key, 0)
    assert p.next_batch(0) == ["a"]
    assert p.next_batch(0) == ["b"]
    assert p.next_batch(0) is None
    p.batch_finished(1)
    assert p.next_batch(1) == ["c"]


def test_a_call_that_leaves_before_its_batch_is_not_in_it() -> None:
    p = BatchPolicy(max_batch_size=2, batch_wait_timeout_s=1)
    p.arrive("a", 0)
    p.arrive("b", 0)
    assert p.leave("a") is True
    assert p.leave("a") is False
    assert p.next_batch(0) is None  # b alone is not a full batch
    assert p.next_batch(1) == ["b"]
    assert p.leave("b") is False  # already running


def test_new_settings_apply_to_the_calls_already_waiting() -> None:
    p = BatchPolicy(max_batch_size=4, batch_wait_timeout_s=10)
    p.arrive("a", 0)
    p.arrive("b", 0)
    assert p.next_batch(0) is None
    p.configure(max_batch_size=2)
    assert p.next_batch(0) == ["a", "b"]
    p.arrive("c", 0)
    p.configure(batch_wait_timeout_s=1)
    assert p.next_batch(1) is None  # the slot is busy
    p.batch_finished(1)
    assert p.next_batch(2) == ["c"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_batch_size": 0}, "max_batch_size=0"),
    ({"max_batch_size": 2.5}, "max_batch_size=2.5"),
    ({"batch_wait_timeout_s": -1}, "batch_wait_timeout_s=-1"),
    ({"batch_wait_timeout_s": float("inf")}, "batch_wait_timeout_s=inf"),
    ({"max_concurrent_batches": 0}, "max_concurrent_batches=0"),
])
def test_bad_settings_are_refused_with_the_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchPolicy(**kwargs)
    with pytest.raises(ValueError, match=message):
        serve.batch(**kwargs)


def test_finishing_a_batch_that_never_started_is_an_error() -> None:
    with pytest.raises(ValueError, match="without a running batch"):
        BatchPolicy().batch_finished(0)


# -- the rule, exhaustively: random event sequences on a fake clock ---------------------------

events = st.lists(st.tuples(
    st.integers(0, 20),  # time since the previous event
    st.sampled_from(["arrive", "arrive", "arrive", "leave", "finish", "resize", "retime"]),
    st.integers(0, 1000),  # which call / batch, or the new setting
), max_size=60)


@given(max_batch_size=st.integers(1, 5), timeout=st.integers(0, 15),
       concurrency=st.integers(1, 3), script=events)
def test_the_rule_holds_for_any_sequence_of_events(
        max_batch_size: int, timeout: int, concurrency: int,
        script: list[tuple[int, str, int]]) -> None:
    p = BatchPolicy(max_batch_size, timeout, concurrency)
    waiting: list[tuple[int, int]] = []  # (key, arrival), oldest first: the test's own record
    running: list[list[int]] = []
    started: list[int] = []
    left: set[int] = set()
    free_since = float("-inf")  # when a slot last became free, as the test sees it
    now = 0
    keys = iter(range(10**6))

    def poll(t: int) -> None:
        while (batch := p.next_batch(t)) is not None:
            assert 1 <= len(batch) <= p.max_batch_size
            assert len(running) < concurrency, "more batches than max_concurrent_batches"
            assert batch == [k for k, _ in waiting[:len(batch)]], "not the oldest, in order"
            if len(batch) < p.max_batch_size:  # partial: everything waiting, and only when due
                assert len(batch) == len(waiting)
                assert t >= max(waiting[0][1], free_since) + p.batch_wait_timeout_s
            del waiting[:len(batch)]
            running.append(batch)
            started.extend(batch)
        # Nothing that is due is left waiting while a slot is free.
        if waiting and len(running) < concurrency:
            assert len(waiting) < p.max_batch_size
            due = max(waiting[0][1], free_since) + p.batch_wait_timeout_s
            assert t < due
            assert p.wake_at() == due
        else:
            assert p.wake_at() is None

    def advance_to(t: int) -> None:
        nonlocal now
        while (wake := p.wake_at()) is not None and wake <= t:
            now = max(now, int(wake))
            poll(now)
        now = t

    for dt, kind, n in script:
        advance_to(now + dt)
        if kind == "arrive":
            key = next(keys)
            p.arrive(key, now)
            waiting.append((key, now))
        elif kind == "leave" and waiting:
            key, _ = waiting.pop(n % len(waiting))
            assert p.leave(key)
            left.add(key)
        elif kind == "finish" and running:
            running.pop(n % len(running))
            if len(running) == concurrency - 1:
                free_since = now
            p.batch_finished(now)
        elif kind == "resize":
            p.configure(max_batch_size=1 + n % 5)
        elif kind == "retime":
            p.configure(batch_wait_timeout_s=n % 16)
        poll(now)
    # Let every batch finish: every call that did not leave runs exactly once.
    while running or waiting:
        if running:
            running.pop()
            if len(running) == concurrency - 1:
                free_since = now
            p.batch_finished(now)
            poll(now)
        advance_to(now + 100)
    assert len(started) == len(set(started))
    assert set(started) | left == set(range(next(keys)))
    assert not set(started) & left


# -- the decorator ----------------------------------------------------------------------------


class Doubler:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def double(self, xs: list[int]) -> list[int]:
        self.batches.append(list(xs))
        await asyncio.sleep(0.01)
        return [2 * x for x in xs]


def test_each_caller_passes_one_item_and_gets_its_own_result() -> None:
    doubler = Doubler()

    async def main() -> list[int]:
        return list(await asyncio.gather(*(doubler.double(i) for i in range(6))))

    assert asyncio.run(main()) == [0, 2, 4, 6, 8, 10]
    assert doubler.batches == [[0, 1, 2, 3], [4, 5]]


def test_instances_batch_apart() -> None:
    a, b = Doubler(), Doubler()

    async def main() -> None:
        await asyncio.gather(a.double(1), b.double(2), a.double(3))

    asyncio.run(main())
    assert a.batches == [[1, 3]] and b.batches == [[2]]


def test_works_on_functions_with_and_without_arguments() -> None:
    seen: list[list[str]] = []

    @serve.batch
    async def shout(words: list[str]) -> list[str]:
        seen.append(words)
        return [w.upper() for w in words]

    async def main() -> list[str]:
        return list(await asyncio.gather(shout("a"), shout(words="b")))

    assert asyncio.run(main()) == ["A", "B"]
    assert seen == [["a", "b"]]
    assert asyncio.run(shout("c")) == "C"  # a second event loop gets a queue of its own


def test_several_parameters_each_become_a_list() -> None:
    @serve.batch(max_batch_size=3)
    async def add(xs: list[int], ys: list[int], *, scale: Any = 1) -> list[int]:
        # a caller that leaves out `scale` counts as passing its default
        return [(x + y) * s for x, y, s in zip(xs, ys, scale, strict=True)]

    async def main() -> list[int]:
        return list(await asyncio.gather(add(1, 2), add(3, ys=4, scale=10), add(5, 6)))

    assert asyncio.run(main()) == [3, 70, 11]


def test_an_error_reaches_every_caller_of_its_batch_only() -> None:
    class Flaky:
        @serve.batch(max_batch_size=2, batch_wait_timeout_s=1)
        async def run(self, xs: list[int]) -> list[int]:
            if 13 in xs:
                raise ValueError(f"unlucky batch {xs}")
            return xs

    flaky = Flaky()

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(flaky.run(x) for x in (13, 1, 2, 3)),
                                         return_exceptions=True))

    first, second, third, fourth = asyncio.run(main())
    assert isinstance(first, ValueError) and isinstance(second, ValueError)
    assert "unlucky batch [13, 1]" in str(first)
    assert (third, fourth) == (2, 3)


def test_a_result_of_the_wrong_length_fails_every_caller_with_the_rule() -> None:
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=1)
    async def lossy(xs: list[int]) -> list[int]:
        return xs[:1]

    async def main() -> list[Any]:
        return list(await asyncio.gather(lossy(1), lossy(2), return_exceptions=True))

    for outcome in asyncio.run(main()):
        assert isinstance(outcome, TypeError)
        assert "was given 2 items and returned a list of length 1" in str(outcome)


def test_only_async_functions_with_named_parameters_can_be_batched() -> None:
    with pytest.raises(TypeError, match="make it 'async def'"):
        serve.batch(lambda xs: xs)
    with pytest.raises(TypeError, match=r"without \*args"):

        @serve.batch
        async def star(*xs: Any) -> list[Any]:
            return list(xs)


def test_set_max_batch_size_and_timeout_change_the_batches() -> None:
    doubler = Doubler()

    async def main() -> None:
        doubler.double.set_max_batch_size(2)
        await asyncio.gather(*(doubler.double(i) for i in range(4)))
        doubler.double.set_batch_wait_timeout_s(0.0)
        await doubler.double(9)

    try:
        asyncio.run(main())
        assert doubler.batches == [[0, 1], [2, 3], [9]]
        assert doubler.double._get_max_batch_size() == 2
        with pytest.raises(ValueError, match="max_batch_size=0"):
            doubler.double.set_max_batch_size(0)
    finally:
        doubler.double.set_max_batch_size(4)
        doubler.double.set_batch_wait_timeout_s(0.05)


def test_max_concurrent_batches_lets_batches_overlap() -> None:
    running, most = 0, 0

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0, max_concurrent_batches=3)
    async def slow(xs: list[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return xs

    async def main() -> None:
        await asyncio.gather(*(slow(i) for i in range(6)))

    asyncio.run(main())
    assert most == 3


def test_calls_for_different_models_go_to_separate_calls() -> None:
    seen: list[tuple[str, list[int]]] = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=1)
    async def per_model(xs: list[int]) -> list[int]:
        seen.append((serve.get_multiplexed_model_id(), xs))
        return xs

    async def call(model: str, x: int) -> int:
        set_multiplexed_model_id(model)  # as a replica does for each request
        return await per_model(x)

    async def main() -> None:
        await asyncio.gather(call("a", 1), call("b", 2), call("a", 3), call("b", 4))

    asyncio.run(main())
    assert sorted(seen) == [("a", [1, 3]), ("b", [2, 4])]


def test_a_caller_cancelled_before_its_batch_leaves_the_queue() -> None:
    seen: list[list[int]] = []

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.2)
    async def record(xs: list[int]) -> list[int]:
        seen.append(xs)
        return xs

    async def main() -> None:
        doomed = asyncio.ensure_future(record(1))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await asyncio.gather(record(2), record(3))

    asyncio.run(main())
    assert seen == [[2, 3]]


# -- streaming batches ------------------------------------------------------------------------


class Counter:
    """Streams, per caller, the numbers from its start up to its start + 3."""

    def __init__(self) -> None:
        self.gone_seen: list[frozenset[int]] = []
        self.closed = asyncio.Event()
        self.steps = 0

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.05)
    async def count(self, starts: list[int]) -> Any:
        try:
            for step in range(4):
                self.steps += 1
                gone = yield [s + step if s + step < 100 else StopIteration for s in starts]
                self.gone_seen.append(frozenset(gone or ()))
                await asyncio.sleep(0.01)
        finally:
            self.closed.set()


def test_each_caller_of_a_streaming_batch_gets_its_own_stream() -> None:
    counter = Counter()

    async def take(start: int) -> list[int]:
        return [x async for x in counter.count(start)]

    async def main() -> list[list[int]]:
        return list(await asyncio.gather(take(0), take(10), take(98)))

    assert asyncio.run(main()) == [[0, 1, 2, 3], [10, 11, 12, 13], [98, 99]]  # 98: stopped


def test_a_caller_that_leaves_a_streaming_batch_does_not_disturb_the_others() -> None:
    counter = Counter()

    async def leave_after_one() -> list[int]:
        got = []
        stream = counter.count(50)
        async for x in stream:
            got.append(x)
            break
        await stream.aclose()
        return got

    async def main() -> tuple[list[int], list[int]]:
        stays = asyncio.ensure_future(_collect(counter.count(0)))
        await asyncio.sleep(0)  # it joins first: position 0
        leaves = await leave_after_one()
        return leaves, await stays

    leaves, stays = asyncio.run(main())
    assert leaves == [50] and stays == [0, 1, 2, 3]
    # the generator learnt which caller had gone (position 1 of its batch), from the next step on
    assert frozenset({1}) in counter.gone_seen
    assert counter.gone_seen[0] == frozenset()


def test_when_every_caller_has_gone_the_generator_is_closed() -> None:
    counter = Counter()

    async def main() -> None:
        stream = counter.count(0)
        assert await stream.__anext__() == 0
        await stream.aclose()
        await asyncio.wait_for(counter.closed.wait(), 5)

    asyncio.run(main())
    assert counter.steps < 4  # it did not run to the end for nobody


def test_an_error_in_a_streaming_batch_reaches_every_caller_after_its_items() -> None:
    @serve.batch(max_batch_size=2, batch_wait_timeout_s=1)
    async def breaks(xs: list[int]) -> Any:
        yield xs
        raise RuntimeError("model fell over")

    async def take(x: int) -> list[Any]:
        got: list[Any] = []
        try:
            async for item in breaks(x):
                got.append(item)
        except RuntimeError as exc:
            got.append(str(exc))
        return got

    async def main() -> list[list[Any]]:
        return list(await asyncio.gather(take(1), take(2)))

    assert asyncio.run(main()) == [[1, "model fell over"], [2, "model fell over"]]


async def _collect(stream: Any) -> list[Any]:
    return [x async for x in stream]


# -- inside a deployment ----------------------------------------------------------------------


@serve.deployment(max_ongoing_requests=32)
class BatchedModel:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.2)
    async def predict(self, xs: list[int]) -> list[int]:
        self.sizes.append(len(xs))
        return [x * x for x in xs]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.2)
    async def tokens(self, ns: list[int]) -> Any:
        for i in range(max(ns)):
            yield [f"{n}:{i}" if i < n else StopIteration for n in ns]

    async def __call__(self, x: int) -> int:
        return await self.predict(x)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.predict.set_max_batch_size(config["max_batch_size"])

    async def batch_sizes(self) -> list[int]:
        return self.sizes


def test_batching_inside_a_deployment_through_handles(serve_instance: None) -> None:
    handle = serve.run(BatchedModel.options(user_config={"max_batch_size": 4}).bind(),
                       route_prefix=None)
    responses = [handle.remote(x) for x in range(8)]
    assert [r.result(timeout_s=60) for r in responses] == [x * x for x in range(8)]
    sizes = handle.batch_sizes.remote().result(timeout_s=30)
    assert sum(sizes) == 8 and max(sizes) == 4  # reconfigure set the size; batches formed

    streams = [handle.options(stream=True).tokens.remote(n) for n in (2, 3)]
    assert [list(s) for s in streams] == [["2:0", "2:1"], ["3:0", "3:1", "3:2"]]
