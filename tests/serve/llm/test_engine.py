"""``LLMEngine``: continuous batching of a real (tiny) Hugging Face causal LM."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ember.serve.llm import (
    EngineClosedError,
    EngineOverloadedError,
    LLMEngine,
    SamplingParams,
)
from tests.serve.llm.conftest import CONTEXT

torch = pytest.importorskip("torch")


@pytest.fixture
def engine(tiny_gpt2: str) -> Iterator[LLMEngine]:
    with LLMEngine.from_pretrained(tiny_gpt2, max_num_seqs=4) as engine:
        yield engine


def greedy(max_tokens: int, **kwargs: Any) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, **kwargs)


async def complete(engine: LLMEngine, prompt: str | list[int], params: SamplingParams,
                   delay: float = 0.0) -> tuple[list[int], str, Any]:
    await asyncio.sleep(delay)
    ids: list[int] = []
    text = ""
    async for delta in engine.generate(prompt, params):
        ids += delta.token_ids
        text += delta.text
    return ids, text, delta


def test_greedy_tokens_are_model_generates_while_requests_join_and_leave(
        engine: LLMEngine) -> None:
    # six requests on four places, arriving at different times, each with its own length:
    # sequences join a running batch (with its padding) and leave it at different steps
    prompts = ["Hello there", "a", "The quick brown fox jumps over", "xyz 123 ", "é!", "0"]
    lengths = [40, 7, 25, 33, 12, 20]
    expected = []
    for prompt, n in zip(prompts, lengths, strict=True):
        ids = torch.tensor([engine.encode(prompt)])
        out = engine.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        expected.append(out[0, ids.shape[1]:].tolist())

    async def main() -> list[tuple[list[int], str, Any]]:
        return list(await asyncio.gather(*(
            complete(engine, p, greedy(n), delay=0.005 * i)
            for i, (p, n) in enumerate(zip(prompts, lengths, strict=True)))))

    results = asyncio.run(main())
    for (ids, text, last), want, n in zip(results, expected, lengths, strict=True):
        assert ids == want
        assert text == engine.tokenizer.decode(want)
        assert last.finish_reason == "length" and last.completion_tokens == n
    stats = engine.stats()
    assert stats.peak_batch_size == 4  # the batch filled up: they did run together
    assert stats.finished == 6 and stats.running == 0 and stats.waiting == 0


def run_together(engine: LLMEngine, n: int, tokens: int) -> None:
    async def one() -> None:
        async for _ in engine.generate("Hi", greedy(tokens)):
            pass

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(n)))

    asyncio.run(main())


def test_deltas_carry_one_token_each_while_the_batch_is_small(tiny_gpt2: str) -> None:
    with LLMEngine.from_pretrained(tiny_gpt2, max_num_seqs=8) as engine:
        run_together(engine, 2, 12)
        assert engine.stats().deltas == 2 * 12


def test_a_large_batch_hands_out_several_tokens_per_delta(tiny_gpt2: str) -> None:
    with LLMEngine.from_pretrained(tiny_gpt2, max_num_seqs=8) as engine:
        run_together(engine, 8, 25)
        stats = engine.stats()
        # the first token at once, then two per delta while 8 run (8 / 4 deltas per step):
        # 13 deltas each; a few more if they did not all join at the same step
        assert stats.generated_tokens == 8 * 25 and stats.peak_batch_size == 8
        assert 8 * 13 <= stats.deltas <= 8 * 16
    with LLMEngine.from_pretrained(tiny_gpt2, stream_interval=5) as engine:
        run_together(engine, 1, 12)
        assert engine.stats().deltas == 4  # 1 + 5 + 5, and the last 1 at the end
    with pytest.raises(ValueError, match="stream_interval=0"):
        LLMEngine(engine.model, engine.tokenizer, stream_interval=0)


def test_token_id_prompts_and_usage_counts(engine: LLMEngine) -> None:
    ids, _, last = asyncio.run(complete(engine, [72, 105], greedy(3)))
    assert len(ids) == 3 and (last.prompt_tokens, last.completion_tokens) == (2, 3)


def test_a_stop_string_ends_the_completion_before_it(engine: LLMEngine) -> None:
    _, full, _ = asyncio.run(complete(engine, "Hello", greedy(30)))
    stop = full[10:12]
    _, text, last = asyncio.run(complete(engine, "Hello", greedy(30, stop=(stop, "never said"))))
    assert text == full[:full.index(stop)]
    assert last.finish_reason == "stop"


def test_the_end_of_sequence_token_and_stop_token_ids_end_the_completion(
        engine: LLMEngine) -> None:
    ids, _, _ = asyncio.run(complete(engine, "Hello", greedy(30)))
    token = ids[-1]
    first = ids.index(token)  # where that token first comes
    _, _, last = asyncio.run(complete(engine, "Hello", SamplingParams(
        max_tokens=30, temperature=0, stop_token_ids=(token,))))
    assert last.finish_reason == "stop" and last.completion_tokens == first

    engine.model.generation_config.eos_token_id = token  # now it is the model's own eos
    with LLMEngine(engine.model, engine.tokenizer) as eos_engine:
        out, _, last = asyncio.run(complete(eos_engine, "Hello", SamplingParams(
            max_tokens=30, temperature=0)))
        assert last.finish_reason == "stop" and out == ids[:first]
        out, _, last = asyncio.run(complete(eos_engine, "Hello", greedy(30)))  # ignore_eos
        assert last.finish_reason == "length" and out == ids


def test_sampling_is_reproducible_by_seed_and_top_p_near_zero_is_greedy(
        engine: LLMEngine) -> None:
    def sample(**kwargs: Any) -> list[int]:
        params = SamplingParams(max_tokens=24, temperature=1.5, ignore_eos=True, **kwargs)
        return asyncio.run(complete(engine, "Once", params))[0]

    assert sample(seed=1) == sample(seed=1)
    assert sample(seed=1) != sample(seed=2)
    assert sample(seed=3, top_p=1e-6) == asyncio.run(complete(engine, "Once", greedy(24)))[0]


def test_each_request_keeps_its_own_settings_in_one_batch(engine: LLMEngine) -> None:
    async def main() -> list[Any]:
        return list(await asyncio.gather(
            complete(engine, "abc", greedy(5)),
            complete(engine, "abc", SamplingParams(max_tokens=9, temperature=1.0, seed=4,
                                                   ignore_eos=True)),
            complete(engine, "abc", greedy(2))))

    (g5, _, _), (s9, _, _), (g2, _, _) = asyncio.run(main())
    assert len(g5) == 5 and len(s9) == 9 and g2 == g5[:2]


def test_a_caller_that_stops_listening_leaves_the_batch(engine: LLMEngine) -> None:
    async def main() -> None:
        stream = engine.generate("Hello", greedy(400))
        await stream.__anext__()
        await stream.aclose()
        stayer = await complete(engine, "Hi", greedy(10))
        assert len(stayer[0]) == 10

    asyncio.run(main())
    deadline = time.monotonic() + 10
    while engine.stats().aborted == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = engine.stats()
    assert stats.aborted == 1 and stats.running == 0
    assert stats.generated_tokens < 100  # it did not run on to 400 tokens for nobody


def test_the_step_loop_never_blocks_the_event_loop(tiny_gpt2: str) -> None:
    engine = LLMEngine.from_pretrained(tiny_gpt2)
    forward = engine.model.forward

    def slow_forward(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)  # a big model's step
        return forward(*args, **kwargs)

    engine.model.forward = slow_forward  # type: ignore[method-assign]

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        await complete(engine, "Hello", greedy(10))  # 11 forward passes: >= 0.55 s
        task.cancel()
        return ticks

    try:
        assert asyncio.run(main()) >= 30  # the loop ran on while the model computed
    finally:
        engine.close()


def test_prompts_the_context_cannot_hold_are_refused_with_the_numbers(
        engine: LLMEngine) -> None:
    async def first(prompt: Any, params: SamplingParams) -> Any:
        return await engine.generate(prompt, params).__anext__()

    with pytest.raises(ValueError, match=f"context holds {CONTEXT}"):
        asyncio.run(first([1] * CONTEXT, greedy(1)))
    with pytest.raises(ValueError, match=f"ask for at most {CONTEXT - 3}"):
        asyncio.run(first([1, 2, 3], greedy(CONTEXT)))
    with pytest.raises(ValueError, match="prompt is empty"):
        asyncio.run(first("", greedy(1)))
    # without max_tokens, a completion runs to the end of the context
    _, _, last = asyncio.run(complete(engine, [1] * (CONTEXT - 4), SamplingParams(
        max_tokens=None, temperature=0, ignore_eos=True)))
    assert last.finish_reason == "length" and last.completion_tokens == 4


def test_past_max_waiting_requests_are_refused_at_once(tiny_gpt2: str) -> None:
    with LLMEngine.from_pretrained(tiny_gpt2, max_num_seqs=1, max_waiting=1) as engine:
        async def main() -> None:
            running = asyncio.ensure_future(complete(engine, "a", greedy(200)))
            await asyncio.sleep(0.1)  # it runs; a second waits
            waiting = asyncio.ensure_future(complete(engine, "b", greedy(2)))
            await asyncio.sleep(0)
            with pytest.raises(EngineOverloadedError, match="max_waiting=1"):
                await complete(engine, "c", greedy(2))
            await asyncio.gather(running, waiting)

        asyncio.run(main())


def test_a_failing_step_fails_its_requests_and_the_engine_goes_on(engine: LLMEngine) -> None:
    forward = engine.model.forward
    broken = threading.Event()

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not broken.is_set():
            broken.set()
            raise RuntimeError("out of memory, say")
        return forward(*args, **kwargs)

    engine.model.forward = flaky  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="out of memory, say"):
        asyncio.run(complete(engine, "Hello", greedy(5)))
    assert len(asyncio.run(complete(engine, "Hello", greedy(5)))[0]) == 5


def test_closing_the_engine_fails_what_it_holds(tiny_gpt2: str) -> None:
    engine = LLMEngine.from_pretrained(tiny_gpt2)

    async def main() -> None:
        stream = engine.generate("Hello", greedy(400))
        await stream.__anext__()
        await asyncio.to_thread(engine.close)
        with pytest.raises(EngineClosedError):
            async for _ in stream:
                pass
        with pytest.raises(EngineClosedError):
            await engine.generate("Hi", greedy(1)).__anext__()

    asyncio.run(main())
    assert engine.closed


def test_an_evicted_engine_finishes_what_it_holds_and_takes_nothing_new(
        tiny_gpt2: str) -> None:
    engine = LLMEngine.from_pretrained(tiny_gpt2)

    async def main() -> None:
        running = asyncio.ensure_future(complete(engine, "Hello", greedy(60)))
        await asyncio.sleep(0.05)
        await engine.aclose()  # what @serve.multiplexed calls on eviction
        with pytest.raises(EngineClosedError):
            await engine.generate("Hi", greedy(1)).__anext__()
        ids, _, last = await running
        assert len(ids) == 60 and last.finish_reason == "length"

    asyncio.run(main())
    deadline = time.monotonic() + 10
    while not engine.stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.stopped


def test_bad_sampling_params_name_the_field() -> None:
    with pytest.raises(ValueError, match="temperature=-1"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p=0"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_tokens=0"):
        SamplingParams(max_tokens=0)
    assert SamplingParams(stop="x").stop == ("x",)


def test_the_byte_tokenizer_round_trips_any_text(tmp_path: Any) -> None:
    from transformers import AutoTokenizer

    from ember.serve.llm import byte_tokenizer

    byte_tokenizer().save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = "héllo\x00 wörld Ā"
    assert tokenizer.encode(text) == list(text.encode())  # "Ā" is not the eos token
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.eos_token_id == 0
