"""The replica's cap on requests in flight (``_Slots`` in ``ember/serve/_replica.py``)."""

from __future__ import annotations

import asyncio

from ember.serve._replica import _Slots


def test_slots_cap_requests_and_hand_freed_ones_out_in_arrival_order() -> None:
    async def main() -> None:
        slots = _Slots(2)
        inside: list[str] = []
        order: list[str] = []
        release = {name: asyncio.Event() for name in "abcde"}

        async def request(name: str) -> None:
            async with slots:
                inside.append(name)
                order.append(name)
                await release[name].wait()
                inside.remove(name)

        tasks = [asyncio.create_task(request(name)) for name in "abcde"]
        await asyncio.sleep(0.01)
        assert inside == ["a", "b"]  # the cap holds; c, d and e wait
        release["b"].set()
        await asyncio.sleep(0.01)
        assert inside == ["a", "c"]  # the longest waiter got b's slot
        for name in "acde":
            release[name].set()
        await asyncio.gather(*tasks)
        assert order == ["a", "b", "c", "d", "e"]
        assert slots._free == 2 and not slots._waiters

    asyncio.run(main())


def test_a_cancelled_waiter_gives_up_its_place_and_any_slot_it_was_handed() -> None:
    async def main() -> None:
        slots = _Slots(1)
        got: list[str] = []

        async def request(name: str, hold: asyncio.Event) -> None:
            async with slots:
                got.append(name)
                await hold.wait()

        first_done = asyncio.Event()
        first = asyncio.create_task(request("first", first_done))
        await asyncio.sleep(0)
        waiting = asyncio.create_task(request("cancelled while waiting", asyncio.Event()))
        handed = asyncio.create_task(request("cancelled as it was handed", asyncio.Event()))
        last = asyncio.create_task(request("last", asyncio.Event()))
        await asyncio.sleep(0.01)
        waiting.cancel()
        await asyncio.sleep(0.01)
        first_done.set()  # its slot goes to `handed`, which is cancelled before it runs
        await asyncio.sleep(0)
        handed.cancel()
        await asyncio.sleep(0.01)
        assert got == ["first", "last"]  # the slot passed on: nothing stuck, nothing lost
        last.cancel()
        await asyncio.gather(first, waiting, handed, last, return_exceptions=True)
        assert slots._free == 1 and not slots._waiters

    asyncio.run(main())
