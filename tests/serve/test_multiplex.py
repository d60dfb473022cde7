from __future__ import annotations

import asyncio

import pytest

from ember.serve._multiplex import (
    Action,
    Decision,
    ModelCachePolicy,
    get_multiplexed_model_id,
    multiplexed,
    set_multiplexed_model_id,
)


def test_first_request_loads_then_hits() -> None:
    p = ModelCachePolicy(2)
    assert p.request("a").action is Action.LOAD
    p.loaded("a")
    assert p.request("a").action is Action.HIT


def test_concurrent_requests_join_the_load_in_flight() -> None:
    p = ModelCachePolicy(2)
    assert p.request("a").action is Action.LOAD
    assert p.request("a").action is Action.JOIN
    assert p.request("a").action is Action.JOIN
    assert p.loading == {"a"}


def test_least_recently_used_is_evicted() -> None:
    p = ModelCachePolicy(2)
    for m in ("a", "b"):
        p.request(m)
        p.loaded(m)
    p.request("a")  # a is now the most recent
    decision = p.request("c")
    assert decision.action is Action.LOAD
    assert decision.evict == ("b",)
    p.loaded("c")
    assert p.models == ["a", "c"]


def test_loads_in_flight_count_toward_capacity_and_are_never_evicted() -> None:
    p = ModelCachePolicy(2)
    p.request("a")
    p.request("b")
    assert p.request("c").action is Action.WAIT  # both slots loading: no room, none made
    assert p.request("b").action is Action.JOIN
    p.loaded("a")
    decision = p.request("c")  # a finished loading: it is the one that can go
    assert decision == Decision(Action.LOAD, ("a",))
    assert p.request("d").action is Action.WAIT  # b and c loading
    p.loaded("b")
    p.loaded("c")
    assert p.request("d").evict == ("b",)
    assert len(p.models) + len(p.loading) <= 2


def test_failed_load_can_be_retried() -> None:
    p = ModelCachePolicy(1)
    p.request("a")
    p.load_failed("a")
    assert p.request("a").action is Action.LOAD


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_num_models_per_replica=0"):
        ModelCachePolicy(0)


def test_loader_runs_once_per_model_under_concurrent_requests() -> None:
    calls: list[str] = []

    class Holder:
        @multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str) -> str:
            calls.append(model_id)
            await asyncio.sleep(0.01)
            return f"model-{model_id}"

    async def main() -> list[str]:
        h = Holder()
        return list(await asyncio.gather(*(h.get_model(m) for m in "aabba")))

    assert asyncio.run(main()) == ["model-a"] * 2 + ["model-b"] * 2 + ["model-a"]
    assert calls == ["a", "b"]


def test_evicted_model_is_loaded_again() -> None:
    calls: list[str] = []

    @multiplexed(max_num_models_per_replica=1)
    async def load(model_id: str) -> str:
        calls.append(model_id)
        return model_id

    async def main() -> None:
        for m in ("a", "b", "a"):
            await load(m)

    asyncio.run(main())
    assert calls == ["a", "b", "a"]


def test_failed_load_reaches_every_waiter() -> None:
    class Broken:
        @multiplexed
        async def get_model(self, model_id: str) -> str:
            await asyncio.sleep(0.01)
            raise RuntimeError(f"no model {model_id}")

    async def main() -> list[object]:
        b = Broken()
        return list(await asyncio.gather(b.get_model("x"), b.get_model("x"),
                                         return_exceptions=True))

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_sync_loader_is_refused() -> None:
    with pytest.raises(TypeError, match="async loader"):
        multiplexed(lambda model_id: model_id)


def test_model_id_context() -> None:
    assert get_multiplexed_model_id() == ""
    token = set_multiplexed_model_id("m1")
    try:
        assert get_multiplexed_model_id() == "m1"
    finally:
        from ember.serve._multiplex import _model_id

        _model_id.reset(token)


def test_evicted_models_are_closed_before_the_next_load() -> None:
    events: list[str] = []

    class Closing:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            events.append(f"close {self.name}")

    class AsyncClosing(Closing):
        async def aclose(self) -> None:
            events.append(f"aclose {self.name}")

    class Plain(Closing):
        close = None  # type: ignore[assignment]

        def __del__(self) -> None:
            events.append(f"del {self.name}")

    kinds = {"a": Closing, "b": AsyncClosing, "c": Plain, "d": Closing}

    @multiplexed(max_num_models_per_replica=1)
    async def load(model_id: str) -> Closing:
        events.append(f"load {model_id}")
        return kinds[model_id](model_id)

    async def main() -> None:
        for m in "abcd":
            assert (await load(m)).name == m

    asyncio.run(main())
    assert events == ["load a", "close a", "load b", "aclose b", "load c", "del c", "load d"]


def test_a_replica_never_holds_more_models_than_its_slots() -> None:
    held: set[str] = set()
    most = 0

    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            held.discard(self.name)

    class Holder:
        @multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str) -> Model:
            nonlocal most
            held.add(model_id)
            most = max(most, len(held))
            await asyncio.sleep(0.01)
            return Model(model_id)

    async def main() -> list[str]:
        h = Holder()
        models = await asyncio.gather(*(h.get_model(m) for m in "abcdabcdaa"))
        return [m.name for m in models]

    assert asyncio.run(main()) == list("abcdabcdaa")
    assert most == 2
