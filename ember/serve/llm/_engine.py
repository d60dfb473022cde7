"""A continuous-batching text generator for Hugging Face causal language models.

One thread per engine runs the step loop, so the event loop that serves requests never waits on
the model. Each step, requests that arrived join (their prompts are prefilled together, which
also gives each its first token), then one decode step runs for every sequence at once, then
finished and abandoned sequences leave. Which requests join is ``Scheduler``'s decision.

The batch's KV cache is one key and one value tensor per layer, ``[batch, heads, time, dim]``,
left-padded: a sequence's tokens sit at the right end of its row, and an attention mask marks
the padding, with position ids counted from each sequence's own start. A joining sequence's
cache is padded on the left to the batch's length (or the batch's to its) and stacked; a leaving
one's row is dropped, and padding columns that every row has are cut off. Greedy decoding gives
the tokens that ``model.generate`` gives for each prompt alone.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ember.errors import EmberError
from ember.serve.llm._params import Delta, SamplingParams, merged
from ember.serve.llm._scheduler import Scheduler
from ember.serve.llm._text import IncrementalText

logger = logging.getLogger("ember.serve")

CHUNKS_PER_STEP = 4  # deltas handed out per decode step, by default (see ``stream_interval``)


class EngineOverloadedError(EmberError, RuntimeError):
    """The engine already has ``max_waiting`` requests waiting for a place in its batch."""


class EngineClosedError(EmberError, RuntimeError):
    """The engine was closed (its model unloaded) while the request was queued or running."""


@dataclass(frozen=True)
class EngineStats:
    """What the engine is doing, and has done since it started.

    ``peak_batch_size``: the most sequences one decode step has run together. ``deltas``: how
    many pieces of output it has handed to callers (a caller that reads late gets several at
    once, merged; see ``stream_interval``).
    """

    running: int
    waiting: int
    peak_batch_size: int
    steps: int
    generated_tokens: int
    finished: int
    aborted: int
    deltas: int


class _Request:
    """One request: its caller's side (on the caller's event loop) and the step loop's side."""

    def __init__(self, rid: int, prompt_ids: list[int], params: SamplingParams,
                 loop: asyncio.AbstractEventLoop, max_new: int, text: IncrementalText) -> None:
        self.rid = rid
        self.prompt_ids = prompt_ids
        self.params = params
        self.loop = loop
        self.max_new = max_new
        # caller side
        self.deltas: deque[Delta] = deque()
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self.closed = False  # the last delta (or the error) was delivered
        # step loop side
        self.text = text
        self.output_ids: list[int] = []
        self.finish_reason: str | None = None
        self.generator: Any = None
        self.pending_text = ""  # produced, not yet handed to the caller (stream_interval)
        self.pending_ids: list[int] = []


class LLMEngine:
    """Generates text for many requests at once with one causal LM (continuous batching).

    ::

        engine = LLMEngine.from_pretrained("path/to/checkpoint", max_num_seqs=16)
        async for delta in engine.generate("Once upon a time", SamplingParams(max_tokens=32)):
            print(delta.text, end="")
        engine.close()

    ``model`` is a ``transformers`` causal LM (``AutoModelForCausalLM``) whose cache holds one
    key and one value tensor per layer (GPT-2, Llama, Qwen, Mistral and their like);
    ``tokenizer`` its tokenizer. ``max_num_seqs`` sequences decode together; up to
    ``max_waiting`` more wait for a place (past that ``generate`` raises
    ``EngineOverloadedError``); one step prefills at most ``max_prefill_tokens`` prompt tokens.

    ``stream_interval``: a request gets its new tokens every this many steps (the first token
    and the last at once). Each delta costs the server as much to send as the model spends on a
    few sequences' step, so by default it adapts to the batch: one token per delta while at
    most ``CHUNKS_PER_STEP`` sequences run, then every ``ceil(running / CHUNKS_PER_STEP)``
    steps, which keeps about that many deltas per step however large the batch.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_num_seqs: int = 16,
                 max_waiting: int = 256, max_prefill_tokens: int = 4096,
                 stream_interval: int | None = None) -> None:
        import torch

        if stream_interval is not None and (not isinstance(stream_interval, int)
                                            or isinstance(stream_interval, bool)
                                            or stream_interval < 1):
            raise ValueError(f"stream_interval={stream_interval!r} must be an integer >= 1 "
                             "(tokens per delta), or None to adapt it to the batch")
        self._stream_interval = stream_interval
        self._interval = 1  # tokens per delta in the current step

        self.model = model.eval()
        self.tokenizer = tokenizer
        self._scheduler = Scheduler(max_num_seqs, max_waiting, max_prefill_tokens)
        self.max_model_len = _context_length(model, tokenizer)
        self._device = next(model.parameters()).device
        self._eos = _eos_ids(model, tokenizer)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep")
                               if a in params), None)
        self._torch = torch
        # A fast tokenizer decodes in its Rust core; the Python wrapper around it costs several
        # times more per call, and each new token takes two. Same text, unless the tokenizer
        # cleans up spaces afterwards (then the wrapper does it).
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast_decode = None if backend is None or getattr(
            tokenizer, "clean_up_tokenization_spaces", False) else backend.decode
        self._cond = threading.Condition()
        self._waiting: dict[int, _Request] = {}
        self._aborts: set[int] = set()
        self._ids = itertools.count()
        self._closed = False  # takes no new requests
        self._draining = False  # ...and stops once those it holds are done (aclose)
        self._stopped = threading.Event()  # the step loop has ended (or never started)
        self._stopped.set()
        self._thread: threading.Thread | None = None
        # the running batch: owned by the step loop's thread
        self._rows: list[_Request] = []
        self._cache: Any = None  # the batch's KV cache, as the model takes and returns it
        self._mask: Any = None
        self._last: Any = None
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Any]]] = {}
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}
        self._peak = self._steps = self._generated = self._finished = self._aborted = 0
        self._deltas = 0

    @classmethod
    def from_pretrained(cls, path: str, *, device: str | None = None, dtype: Any = None,
                        **options: Any) -> LLMEngine:
        """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from ``path`` (a checkpoint
        folder, as ``save_pretrained`` writes it). ``device``: default ``cuda`` when there is
        a GPU, else ``cpu``. ``options`` go to ``LLMEngine``."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        model = model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return cls(model, tokenizer, **options)

    # -- the caller's side ----------------------------------------------------------------------

    def encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
        """The prompt's token ids, as this engine's tokenizer makes them."""
        return list(self.tokenizer.encode(text, add_special_tokens=special_tokens))

    async def generate(self, prompt: str | Sequence[int],
                       params: SamplingParams | None = None) -> AsyncIterator[Delta]:
        """Generate a completion of ``prompt`` (text, or token ids), yielding what it gains as it
        goes; the last ``Delta`` has a ``finish_reason``. Closing the iterator early (the
        client went away) takes the sequence out of the batch at the next step boundary.

        Raises ``ValueError`` for a prompt the context cannot hold and
        ``EngineOverloadedError`` when too many requests wait already.
        """
        request = self.submit(prompt, params or SamplingParams())
        try:
            while True:
                while not request.deltas and request.error is None:
                    request.ready.clear()
                    await request.ready.wait()
                if request.deltas:
                    delta = merged(list(request.deltas))
                    request.deltas.clear()
                    yield delta
                    if delta.finish_reason is not None:
                        return
                elif request.error is not None:
                    raise request.error
        finally:
            if request.finish_reason is None and request.error is None:
                self._abort(request)

    def submit(self, prompt: str | Sequence[int], params: SamplingParams) -> _Request:
        """Queue one request; it joins the running batch at the next decode step.

        ``prompt`` is text or token ids. The returned request yields its ``Delta`` s as the
        step loop makes them; ``generate`` wraps this for async callers.
        """
        prompt_ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not prompt_ids:
            raise ValueError("the prompt is empty (0 tokens); give at least one token of text")
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"the prompt is {len(prompt_ids)} tokens, and this model's context "
                             f"holds {self.max_model_len}: shorten the prompt")
        if params.max_tokens is not None and params.max_tokens > room:
            raise ValueError(
                f"max_tokens={params.max_tokens} does not fit: the context holds "
                f"{self.max_model_len} tokens and the prompt takes {len(prompt_ids)}; ask for "
                f"at most {room}")
        text = IncrementalText(self._decode, prompt_ids, params.stop)
        request = _Request(next(self._ids), prompt_ids, params, asyncio.get_running_loop(),
                           room if params.max_tokens is None else params.max_tokens, text)
        with self._cond:
            if self._closed:
                raise EngineClosedError("the engine is closed; its model was unloaded")
            if not self._scheduler.add(request.rid, len(prompt_ids)):
                raise EngineOverloadedError(
                    f"this model's batch is full ({self._scheduler.max_num_seqs} sequences) "
                    f"and {self._scheduler.max_waiting} more requests wait for a place "
                    f"(max_waiting={self._scheduler.max_waiting}); retry later")
            self._waiting[request.rid] = request
            if self._thread is None:
                self._stopped.clear()
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="ember-llm-engine")
                self._thread.start()
            self._cond.notify()
        return request

    def _abort(self, request: _Request) -> None:
        with self._cond:
            where = self._scheduler.remove(request.rid)
            if where == "waiting":
                del self._waiting[request.rid]
                self._aborted += 1
            elif where == "running":
                self._aborts.add(request.rid)
                self._cond.notify()

    @property
    def closed(self) -> bool:
        """It takes no new requests (``close`` or ``aclose`` was called)."""
        return self._closed

    @property
    def stopped(self) -> bool:
        """Its step loop has ended: nothing runs and nothing will."""
        return self._closed and self._stopped.is_set()

    def stats(self) -> EngineStats:
        """What the engine did so far: sequences running and waiting, the largest batch it
        reached, steps, tokens generated, requests finished and abandoned."""
        with self._cond:
            return EngineStats(self._scheduler.running, self._scheduler.waiting, self._peak,
                               self._steps, self._generated, self._finished, self._aborted,
                               self._deltas)

    def close(self) -> None:
        """Stop now: requests still queued or running fail with ``EngineClosedError``; returns
        once the step loop has ended. The model goes with the engine's last reference."""
        with self._cond:
            self._closed = True
            self._draining = False
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    async def aclose(self) -> None:
        """Take no new requests, and stop once the requests already taken have finished
        (returns at once). What ``@serve.multiplexed`` calls when it evicts the model: the
        requests in flight on it still get their whole answers."""
        with self._cond:
            if not self._closed:
                self._closed = self._draining = True
            self._cond.notify()

    def __enter__(self) -> LLMEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the step loop (its own thread) ---------------------------------------------------------

    def _decode(self, ids: list[int]) -> str:
        if self._fast_decode is not None:
            return str(self._fast_decode(ids, skip_special_tokens=True))
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _run(self) -> None:
        with self._torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._closed or self._aborts or self._rows
                               or self._scheduler.waiting):
                        self._cond.wait()
                    if self._closed and not (self._draining and (
                            self._rows or self._scheduler.waiting or self._aborts)):
                        break
                    aborts, self._aborts = self._aborts, set()
                    joining = [self._waiting.pop(rid)  # type: ignore[call-overload]
                               for rid in self._scheduler.admit()]
                    self._aborted += len(aborts)
                try:
                    if aborts:
                        self._keep([i for i, r in enumerate(self._rows) if r.rid not in aborts])
                    if joining:
                        self._prefill(joining)
                        joining = []
                    if self._rows:
                        self._step()
                except BaseException as exc:  # every sequence in hand gets it; the loop goes on
                    logger.exception("serve.llm: a generation step failed")
                    self._fail([*self._rows, *joining], exc)
                    self._reset()
                self._flush()
        error = EngineClosedError("the engine was closed; its model was unloaded")
        with self._cond:
            waiting, self._waiting = list(self._waiting.values()), {}
        self._fail([*self._rows, *waiting], error)
        self._reset()
        self._flush()
        self._stopped.set()

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any, *, prefill: bool
                 ) -> tuple[Any, Any]:
        """The next-token logits of each row, and ``cache`` with ``ids`` added."""
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask,
                                  "position_ids": positions, "use_cache": True,
                                  self._cache_arg: cache}
        if prefill and self._keep_arg is not None:
            kwargs[self._keep_arg] = 1
        out = self.model(**kwargs)
        cache = out.get("cache")
        if cache is None:
            cache = out.get("past_key_values")
        return out.logits[:, -1, :].float(), cache

    def _prefill(self, joining: list[_Request]) -> None:
        from transformers import DynamicCache

        torch = self._torch
        longest = max(len(r.prompt_ids) for r in joining)
        ids = torch.zeros(len(joining), longest, dtype=torch.long)
        mask = torch.zeros(len(joining), longest, dtype=torch.long)
        for i, request in enumerate(joining):
            n = len(request.prompt_ids)
            ids[i, longest - n:] = torch.tensor(request.prompt_ids)
            mask[i, longest - n:] = 1
            request.generator = _generator(torch, request.params, self._device)
        ids, mask = ids.to(self._device), mask.to(self._device)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits, cache = self._forward(ids, mask, positions, DynamicCache(), prefill=True)
        tokens = self._sample(logits, joining)
        for request, token in zip(joining, tokens, strict=True):
            self._accept(request, token)
        self._flush()  # the first tokens go out before the next step runs
        stay = [i for i, r in enumerate(joining) if r.finish_reason is None]
        if not stay:
            return
        kv = _kv_of(cache)
        if len(stay) < len(joining):
            index = torch.tensor(stay, dtype=torch.long, device=self._device)
            kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in kv]
            mask = mask.index_select(0, index)
        last = torch.tensor([tokens[i] for i in stay], dtype=torch.long, device=self._device)
        self._join([joining[i] for i in stay], kv, mask, last)

    def _join(self, rows: list[_Request], kv: list[tuple[Any, Any]], mask: Any,
              last: Any) -> None:
        torch = self._torch
        if not self._rows:
            self._rows, self._cache, self._mask, self._last = rows, _cache_of(kv), mask, last
            return
        length = max(self._mask.shape[1], mask.shape[1])
        self._cache = _cache_of([
            (torch.cat([_pad_left(k0, length, 2), _pad_left(k1, length, 2)]),
             torch.cat([_pad_left(v0, length, 2), _pad_left(v1, length, 2)]))
            for (k0, v0), (k1, v1) in zip(_kv_of(self._cache), kv, strict=True)])
        self._mask = torch.cat([_pad_left(self._mask, length, 1), _pad_left(mask, length, 1)])
        self._last = torch.cat([self._last, last])
        self._rows = self._rows + rows

    def _step(self) -> None:
        torch = self._torch
        rows = self._rows
        positions = self._mask.sum(1, keepdim=True)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(rows), 1)], 1)
        logits, self._cache = self._forward(self._last[:, None], self._mask, positions,
                                            self._cache, prefill=False)
        tokens = self._sample(logits, rows)
        self._last = torch.tensor(tokens, dtype=torch.long, device=self._device)
        self._interval = self._stream_interval or -(-len(rows) // CHUNKS_PER_STEP)
        for request, token in zip(rows, tokens, strict=True):
            self._accept(request, token)
        with self._cond:
            self._steps += 1
            self._peak = max(self._peak, len(rows))
        self._keep([i for i, r in enumerate(rows) if r.finish_reason is None])

    def _sample(self, logits: Any, requests: list[_Request]) -> list[int]:
        torch = self._torch
        tokens = [0] * len(requests)
        greedy = [i for i, r in enumerate(requests) if r.params.temperature == 0]
        if greedy:
            picked = logits[greedy].argmax(-1).tolist() if len(greedy) < len(requests) \
                else logits.argmax(-1).tolist()
            for i, token in zip(greedy, picked, strict=True):
                tokens[i] = int(token)
        for i, request in enumerate(requests):
            params = request.params
            if params.temperature == 0:
                continue
            row = logits[i] / params.temperature
            if params.top_p < 1:
                ordered, order = row.sort(descending=True)
                probs = ordered.softmax(-1)
                # keep the most likely tokens until their probabilities reach top_p
                drop = probs.cumsum(-1) - probs >= params.top_p
                ordered[drop] = -float("inf")
                row = torch.full_like(row, -float("inf")).scatter(0, order, ordered)
            token = torch.multinomial(row.softmax(-1), 1, generator=request.generator)
            tokens[i] = int(token)
        return tokens

    def _accept(self, request: _Request, token: int) -> None:
        """One new token for ``request``: its text, and whether it is finished."""
        params = request.params
        if (token in self._eos and not params.ignore_eos) or token in params.stop_token_ids:
            request.finish_reason = "stop"
            text = request.pending_text + request.text.finish()
            self._emit(request, Delta(text, request.pending_ids, "stop",
                                      len(request.prompt_ids), len(request.output_ids)))
            request.pending_text, request.pending_ids = "", []
            return
        request.output_ids.append(token)
        self._generated += 1
        request.pending_text += request.text.add(token)
        request.pending_ids.append(token)
        if request.text.stopped:
            request.finish_reason = "stop"
        elif len(request.output_ids) >= request.max_new or \
                len(request.prompt_ids) + len(request.output_ids) >= self.max_model_len:
            request.finish_reason = "length"
            request.pending_text += request.text.finish()
        if request.finish_reason is None and len(request.output_ids) > 1 \
                and len(request.pending_ids) < self._interval:
            return  # the first token goes at once, then one delta every `_interval` tokens
        self._emit(request, Delta(request.pending_text, request.pending_ids,
                                  request.finish_reason, len(request.prompt_ids),
                                  len(request.output_ids)))
        request.pending_text, request.pending_ids = "", []

    def _emit(self, request: _Request, delta: Delta | BaseException) -> None:
        self._outbox.setdefault(request.loop, []).append((request, delta))
        self._deltas += 1
        if isinstance(delta, Delta) and delta.finish_reason is not None:
            with self._cond:
                self._scheduler.remove(request.rid)
                self._finished += 1

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            mailbox = self._mailboxes.get(loop)
            if mailbox is None or mailbox.loop.is_closed():
                mailbox = self._mailboxes[loop] = _Mailbox(loop)
            try:
                mailbox.post(items)
            except RuntimeError:  # that event loop is closed: nobody waits for these
                del self._mailboxes[loop]
                for request, _ in items:
                    if request.finish_reason is None:
                        request.finish_reason = "abort"
                        self._abort(request)

    def _keep(self, indices: list[int]) -> None:
        """Only these rows of the batch stay; padding that every row has goes too."""
        if len(indices) == len(self._rows):
            return
        if not indices:
            self._reset()
            return
        torch = self._torch
        index = torch.tensor(indices, dtype=torch.long, device=self._device)
        mask = self._mask.index_select(0, index)
        start = int(mask.any(0).nonzero()[0])
        self._mask = mask[:, start:]
        self._cache = _cache_of([(k.index_select(0, index)[:, :, start:],
                                  v.index_select(0, index)[:, :, start:])
                                 for k, v in _kv_of(self._cache)])
        self._last = self._last.index_select(0, index)
        self._rows = [self._rows[i] for i in indices]

    def _reset(self) -> None:
        self._rows, self._cache, self._mask, self._last = [], None, None, None

    def _fail(self, requests: list[_Request], error: BaseException) -> None:
        for request in requests:
            if request.finish_reason is None:
                request.finish_reason = "error"
                self._emit(request, error)
                with self._cond:
                    self._scheduler.remove(request.rid)


class _Mailbox:
    """What the step loop has for the requests of one event loop. The loop is woken (a write
    to its self-pipe, and a wait for the GIL after it) only when it has nothing pending: when
    it lags behind the steps, one wake-up takes the outputs of several."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: list[tuple[_Request, Delta | BaseException]] = []
        self._lock = threading.Lock()
        self._woken = False

    def post(self, items: list[tuple[_Request, Delta | BaseException]]) -> None:
        with self._lock:
            self._items.extend(items)
            if self._woken:
                return
            self._woken = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            with self._lock:
                self._woken = False
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._woken = False
        _deliver(items)


def _deliver(items: list[tuple[_Request, Delta | BaseException]]) -> None:
    """On the caller's event loop: hand each request what the step loop produced for it."""
    for request, item in items:
        if isinstance(item, BaseException):
            request.error = item
        else:
            request.deltas.append(item)
        request.ready.set()


def _generator(torch: Any, params: SamplingParams, device: Any) -> Any:
    if params.temperature == 0:
        return None
    generator = torch.Generator(device=device)
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def _pad_left(tensor: Any, length: int, dim: int) -> Any:
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    import torch

    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _kv_of(cache: Any) -> list[tuple[Any, Any]]:
    """The (key, value) tensors of each layer of a ``transformers`` cache."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    if hasattr(cache, "to_legacy_cache"):
        cache = cache.to_legacy_cache()
    return [(k, v) for k, v, *_ in cache]


def _cache_of(kv: list[tuple[Any, Any]]) -> Any:
    """A ``transformers`` cache holding these (key, value) tensors, one pair per layer."""
    from transformers import DynamicCache

    legacy = getattr(DynamicCache, "from_legacy_cache", None)
    if legacy is not None:
        return legacy(tuple(kv))
    return DynamicCache(kv)


def _context_length(model: Any, tokenizer: Any) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 10**7:
        return value
    raise ValueError("cannot tell the model's context length: its config has no "
                     "max_position_embeddings; set it on model.config")


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    found: set[int] = set()
    generation = getattr(model, "generation_config", None)
    for source in (getattr(generation, "eos_token_id", None), model.config.eos_token_id,
                   getattr(tokenizer, "eos_token_id", None)):
        if isinstance(source, int):
            found.add(source)
        elif isinstance(source, (list, tuple)):
            found.update(int(x) for x in source)
    return frozenset(found)

