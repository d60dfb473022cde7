"""The OpenAI-compatible application: HTTP in front, one ``LLMEngine`` per loaded model behind.

With several replicas::

    client --HTTP--> OpenAIIngress --handle, multiplexed_model_id=body["model"]--> LLMServer x N
                     (checks the request,                                          (one LLMEngine
                      answers errors,                                               per loaded
                      streams SSE)                                                  model)

The ingress reads the ``model`` field and calls the servers with it as the multiplexed model id,
so the router sends each request to a replica that already holds that model, and one pool of
replicas serves many fine-tuned variants. Each server replica keeps its engines in the
``@serve.multiplexed`` LRU (an evicted engine finishes the requests it holds, then stops), and
every engine batches the requests for its model continuously.

With one replica there is nothing to route between, so ``OpenAIServer`` is both: it answers HTTP
and runs the engines in one process (the ``model`` field still picks the engine through the
multiplexed LRU). That saves every streamed chunk a trip between processes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ember import serve
from ember.serve.llm import _openai as oai
from ember.serve.llm._engine import EngineOverloadedError, EngineStats, LLMEngine
from ember.serve.llm._openai import GenerationRequest, OpenAIError

# A model: a checkpoint folder (``save_pretrained``'s), or a function returning
# ``(model, tokenizer)``.
ModelSource = Any

def _load_engine(source: ModelSource, options: dict[str, Any]) -> LLMEngine:
    engine_options = {k: v for k, v in options.items() if k not in ("device", "dtype")}
    if callable(source):
        model, tokenizer = source()
        if options.get("device") is not None:
            model = model.to(options["device"])
        return LLMEngine(model, tokenizer, **engine_options)
    return LLMEngine.from_pretrained(os.fspath(source), device=options.get("device"),
                                     dtype=options.get("dtype"), **engine_options)


class LLMServer:
    """A replica holding one ``LLMEngine`` per loaded model (``@serve.multiplexed``)."""

    def __init__(self, models: Mapping[str, ModelSource], engine_options: dict[str, Any],
                 max_models_per_replica: int) -> None:
        import torch  # noqa: F401  (import the heavy libraries now, not in the first request)
        import transformers  # noqa: F401

        self._models = dict(models)
        self._options = dict(engine_options)
        self._engines: dict[str, LLMEngine] = {}
        self._get_engine = serve.multiplexed(max_num_models_per_replica=max_models_per_replica)(
            self._load)

    async def _load(self, model_id: str) -> LLMEngine:
        if model_id not in self._models:
            raise oai.unknown_model(model_id, list(self._models))
        self._forget_stopped()
        engine = await asyncio.to_thread(_load_engine, self._models[model_id], self._options)
        self._engines[model_id] = engine
        return engine

    def _prompt(self, engine: LLMEngine, request: GenerationRequest) -> str | list[int]:
        if request.kind == "completion":
            return request.prompt if isinstance(request.prompt, str) else list(request.prompt)
        tokenizer = engine.tokenizer
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": role, "content": content} for role, content in request.messages]
            text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
            return engine.encode(text, special_tokens=False)  # the template has them
        return oai.default_chat_prompt(request.messages)

    async def _start(self, request: GenerationRequest) -> tuple[Any, Any]:
        """The engine's stream for the request, and its first delta: a request the model
        cannot take fails here, before anything is sent."""
        engine = await self._get_engine(request.model)
        deltas = engine.generate(self._prompt(engine, request), request.params)
        try:
            first = await deltas.__anext__()
        except ValueError as exc:
            raise oai.bad_request(str(exc)) from None
        except EngineOverloadedError as exc:
            raise oai.overloaded(str(exc)) from None
        return deltas, first

    async def complete(self, request: GenerationRequest) -> dict[str, Any]:
        """The whole answer, as JSON."""
        deltas, delta = await self._start(request)
        text = delta.text
        async for delta in deltas:
            text += delta.text
        return oai.response(request.kind, oai.new_id(request.kind), oai.now(), request.model,
                            text, delta.finish_reason,
                            oai.usage(delta.prompt_tokens, delta.completion_tokens))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[bytes]:
        """The answer as server-sent events, ending with ``data: [DONE]``. Each item holds what
        the model produced since the last one was taken (one or more events)."""
        deltas, delta = await self._start(request)
        kind, model = request.kind, request.model
        rid, created = oai.new_id(kind), oai.now()
        # The first chunk of a chat names the role; otherwise a delta without text (part of a
        # character, or text held back as the possible start of a stop string) sends nothing.
        out = oai.sse(oai.chunk(kind, rid, created, model, delta.text, role=True)) \
            if kind == "chat" or delta.text else b""
        try:
            while True:
                if delta.finish_reason is not None:
                    out += oai.sse(oai.chunk(kind, rid, created, model, None,
                                             delta.finish_reason))
                    if request.include_usage:
                        out += oai.sse(oai.usage_chunk(kind, rid, created, model, oai.usage(
                            delta.prompt_tokens, delta.completion_tokens)))
                    yield out + oai.SSE_DONE
                    return
                if out:
                    yield out
                try:
                    delta = await deltas.__anext__()
                except Exception as exc:  # the model failed mid-answer: say so in the stream
                    error = OpenAIError(500, f"generation failed: {exc}", "server_error")
                    yield oai.sse(error.body()) + oai.SSE_DONE
                    return
                out = oai.sse(oai.chunk(kind, rid, created, model, delta.text)) \
                    if delta.text else b""
        finally:
            await deltas.aclose()  # a client that went away: its sequence leaves the batch

    def _forget_stopped(self) -> None:
        """Drop the engines that an eviction closed and that have finished their requests:
        their models are freed with them."""
        for model_id in [m for m, engine in self._engines.items() if engine.stopped]:
            del self._engines[model_id]

    async def stats(self) -> dict[str, EngineStats]:
        """Each loaded model's engine: batch sizes, tokens, requests finished and abandoned."""
        self._forget_stopped()
        return {model_id: engine.stats() for model_id, engine in self._engines.items()
                if not engine.closed}


class OpenAIIngress:
    """Answers OpenAI's HTTP API; generation happens on the ``LLMServer`` replicas."""

    def __init__(self, server: Any, model_names: list[str]) -> None:
        self._server = server
        self._model_names = list(model_names)
        self._created = oai.now()

    async def __call__(self, request: Any) -> Any:
        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        path = "/" + path.strip("/")
        try:
            if path == "/v1/models":
                _method(request, "GET")
                return _json(oai.models_list(self._model_names, self._created))
            if path.startswith("/v1/models/"):
                _method(request, "GET")
                name = path[len("/v1/models/"):]
                if name not in self._model_names:
                    raise oai.unknown_model(name, self._model_names)
                return _json(oai.models_list([name], self._created)["data"][0])
            if path in ("/v1/completions", "/v1/chat/completions"):
                _method(request, "POST")
                body = oai.parse_json(await request.body())
                parse = oai.parse_chat if path.endswith("chat/completions") else \
                    oai.parse_completion
                return await self._generate(parse(body, self._model_names))
            raise OpenAIError(404, f"no such endpoint: {request.method} {path}; this server "
                                   "has GET /v1/models, POST /v1/completions and POST "
                                   "/v1/chat/completions", "invalid_request_error", None,
                              "unknown_url")
        except OpenAIError as exc:
            return _error(exc)

    async def _complete(self, request: GenerationRequest) -> dict[str, Any]:
        server = self._server.options(multiplexed_model_id=request.model)
        return dict(await server.complete.remote(request))

    def _stream(self, request: GenerationRequest) -> Any:
        server = self._server.options(multiplexed_model_id=request.model, stream=True)
        return server.stream.remote(request)

    async def _generate(self, request: GenerationRequest) -> Any:
        if not request.stream:
            try:
                return _json(await self._complete(request))
            except OpenAIError as exc:
                return _error(exc)
            except (serve.BackPressureError, serve.DeploymentUnavailableError) as exc:
                return _error(oai.overloaded(str(exc)))
        pieces: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        relay = asyncio.ensure_future(_relay(self._stream(request), pieces))
        try:
            first = await pieces.get()
        except BaseException:
            relay.cancel()
            raise
        if isinstance(first, OpenAIError):
            return _error(first)
        if isinstance(first, (serve.BackPressureError, serve.DeploymentUnavailableError)):
            return _error(oai.overloaded(str(first)))
        if isinstance(first, BaseException):
            raise first
        from starlette.responses import StreamingResponse

        async def events() -> AsyncIterator[bytes]:
            try:
                piece = first
                while piece is not None:
                    if isinstance(piece, BaseException):  # the server failed mid-answer
                        error = OpenAIError(500, f"generation failed: {piece}", "server_error")
                        yield oai.sse(error.body()) + oai.SSE_DONE
                        return
                    yield piece
                    piece = await pieces.get()
            finally:
                relay.cancel()  # the client went away: the server's generator is closed

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})


class OpenAIServer(LLMServer, OpenAIIngress):
    """One replica that answers HTTP and runs the engines itself (``build_openai_app`` with
    ``num_replicas=1``)."""

    def __init__(self, models: Mapping[str, ModelSource], engine_options: dict[str, Any],
                 max_models_per_replica: int) -> None:
        LLMServer.__init__(self, models, engine_options, max_models_per_replica)
        OpenAIIngress.__init__(self, None, list(models))

    async def _complete(self, request: GenerationRequest) -> dict[str, Any]:
        return await self.complete(request)

    def _stream(self, request: GenerationRequest) -> Any:
        return self.stream(request)


async def _relay(stream: Any, pieces: asyncio.Queue[Any]) -> None:
    """Read a server's stream into ``pieces`` (its items, an exception, then ``None``).

    Its own task, so that cancelling it is the end of the stream: a local generator is closed
    at once; a remote one's response is dropped, which closes the generator on the server. Either
    way the sequence leaves the engine's batch. (A stream read in the request's own task would be
    kept alive by the cancelled request's traceback.)"""
    try:
        async for piece in stream:
            await pieces.put(piece)
        await pieces.put(None)
    except asyncio.CancelledError:
        return  # cancelled by the request it served, and by nothing else
    except Exception as exc:
        await pieces.put(exc.with_traceback(None))  # no frames: they would hold the stream


def _method(request: Any, expected: str) -> None:
    if request.method != expected:
        raise OpenAIError(405, f"{request.method} is not allowed here; use {expected}",
                          "invalid_request_error")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)


def _error(exc: OpenAIError) -> Any:
    headers = {"retry-after": "1"} if exc.status in (429, 503) else None
    return _json(exc.body(), exc.status, headers)


def build_openai_app(
    models: Mapping[str, ModelSource], *, max_num_seqs: int = 16, max_waiting: int = 256,
    max_prefill_tokens: int = 4096, stream_interval: int | None = None, num_replicas: int = 1,
    max_models_per_replica: int | None = None, device: str | None = None, dtype: Any = None,
    ray_actor_options: dict[str, Any] | None = None,
) -> Any:
    """An OpenAI-compatible application serving ``models`` (name -> checkpoint folder, or a
    function returning ``(model, tokenizer)``); ``serve.run`` it::

        app = build_openai_app({"base": "ckpt/base", "tuned": "ckpt/tuned"})
        serve.run(app, port=8000)
        # openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")

    ``num_replicas`` LLM servers each hold up to ``max_models_per_replica`` models (default:
    all of them); the request's ``model`` picks the replica through model multiplexing (behind
    an ingress deployment; one replica answers HTTP itself, there being no choice to make). Each
    model's engine decodes up to ``max_num_seqs`` sequences together, with ``max_waiting``
    more queued (past that: HTTP 503); ``stream_interval`` is ``LLMEngine``'s (how many tokens
    a streamed chunk carries; by default it adapts to the batch). ``device``/``dtype`` go to
    ``from_pretrained``.

    For ``ember serve run config.yaml``, name this function as the ``import_path`` with its
    arguments as ``args``: ``{"models": {...}, "max_num_seqs": 16, ...}``.
    """
    if "models" in models and isinstance(models["models"], Mapping):  # a config's args
        options = {k: v for k, v in models.items() if k != "models"}
        return build_openai_app(models["models"], **options)
    if not models:
        raise ValueError("build_openai_app needs at least one model: {'name': checkpoint}")
    for name, source in models.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"model name {name!r} must be a non-empty string")
        if not (callable(source) or isinstance(source, (str, os.PathLike))):
            raise ValueError(f"model {name!r}: {source!r} is neither a checkpoint folder nor a "
                             "function returning (model, tokenizer)")
    if not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas={num_replicas!r} must be an integer >= 1")
    slots = len(models) if max_models_per_replica is None else max_models_per_replica
    options = {"max_num_seqs": max_num_seqs, "max_waiting": max_waiting,
               "max_prefill_tokens": max_prefill_tokens, "stream_interval": stream_interval,
               "device": device, "dtype": dtype}
    from ember.serve.llm._scheduler import Scheduler

    Scheduler(max_num_seqs, max_waiting, max_prefill_tokens)  # checks the numbers now
    # Every request waiting in an engine is also an ongoing request of its replica.
    ongoing = slots * (max_num_seqs + max_waiting) + 1
    actor_options = dict(ray_actor_options or {})
    if num_replicas == 1:
        return serve.deployment(OpenAIServer, name="LLMServer", max_ongoing_requests=ongoing,
                                ray_actor_options=actor_options).bind(dict(models), options, slots)
    server = serve.deployment(LLMServer, name="LLMServer", num_replicas=num_replicas,
                              max_ongoing_requests=ongoing, ray_actor_options=actor_options)
    ingress = serve.deployment(OpenAIIngress, name="OpenAIIngress",
                               max_ongoing_requests=num_replicas * ongoing)
    return ingress.bind(server.bind(dict(models), options, slots), list(models))

