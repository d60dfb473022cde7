"""Model multiplexing: each replica keeps an LRU of loaded models.

``ModelCachePolicy`` is the decision part, pure: a request for a model is a hit, joins a load
already in flight (one load per model, however many requests want it), or starts a load after
evicting the least recently used loaded models. The plumbing below (``multiplexed``) keeps the
models and the in-flight loads of one replica process and follows those decisions.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("ember.serve")

_model_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "ember_serve_multiplexed_model_id", default=""
)


def get_multiplexed_model_id() -> str:
    """The model id of the request being served ("" when the request named none).

    It comes from the HTTP header ``serve_multiplexed_model_id`` or from
    ``handle.options(multiplexed_model_id=...)``.
    """
    return _model_id.get()


def set_multiplexed_model_id(model_id: str) -> contextvars.Token[str]:
    return _model_id.set(model_id)


# A model id names a model to load: a registry name ("meta-llama/Llama-3-8B"), a version
# ("model:v2"), a path or URL ("s3://bucket/model"). Anything else (spaces, quotes, control
# characters, non-ASCII) is refused before any loader sees it.
MAX_MODEL_ID_LENGTH = 256
MODEL_ID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/@+=~"
)


def model_id_problem(model_id: str) -> str | None:
    """Why ``model_id`` is not a valid multiplexed model id, or ``None`` when it is ("" is
    valid: no model). The rule: at most 256 characters of ``A-Z a-z 0-9 - _ . : / @ + = ~``."""
    if len(model_id) > MAX_MODEL_ID_LENGTH:
        return (f"the multiplexed model id is {len(model_id)} characters long; at most "
                f"{MAX_MODEL_ID_LENGTH} are allowed")
    bad = sorted(set(model_id) - MODEL_ID_CHARS)
    if bad:
        return (f"the multiplexed model id {model_id[:64]!r} has characters outside "
                f"A-Z a-z 0-9 - _ . : / @ + = ~ ({''.join(bad)[:16]!r})")
    return None


class Action(enum.Enum):
    HIT = "hit"  # loaded: use it
    JOIN = "join"  # being loaded by another request: wait for that load
    LOAD = "load"  # load it now (after evicting ``Decision.evict``)
    WAIT = "wait"  # every slot holds a load in flight: ask again when one finishes


@dataclass(frozen=True)
class Decision:
    action: Action
    evict: tuple[str, ...] = ()


@dataclass
class ModelCachePolicy:
    """The LRU of one replica. Loads in flight count toward ``capacity`` and are never evicted,
    so a replica never holds more than ``capacity`` models: when every slot is taken by a load
    in flight, a request for yet another model waits (``WAIT``) for one of them to finish."""

    capacity: int
    _loaded: OrderedDict[str, None] = field(default_factory=OrderedDict)  # oldest first
    _loading: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"max_num_models_per_replica={self.capacity} must be >= 1")

    def request(self, model_id: str) -> Decision:
        if model_id in self._loaded:
            self._loaded.move_to_end(model_id)
            return Decision(Action.HIT)
        if model_id in self._loading:
            return Decision(Action.JOIN)
        overflow = len(self._loaded) + len(self._loading) + 1 - self.capacity
        if overflow > len(self._loaded):  # only loads in flight could make room
            return Decision(Action.WAIT)
        evict = tuple(list(self._loaded)[: max(0, overflow)])
        for old in evict:
            del self._loaded[old]
        self._loading.add(model_id)
        return Decision(Action.LOAD, evict)

    def loaded(self, model_id: str) -> None:
        """The load finished; the model is now the most recently used."""
        self._loading.discard(model_id)
        self._loaded[model_id] = None
        self._loaded.move_to_end(model_id)

    def load_failed(self, model_id: str) -> None:
        self._loading.discard(model_id)

    @property
    def models(self) -> list[str]:
        """Loaded models, least recently used first."""
        return list(self._loaded)

    @property
    def loading(self) -> frozenset[str]:
        return frozenset(self._loading)


class _ModelCache:
    """The loaded models of one loader on one instance, following ``ModelCachePolicy``."""

    def __init__(self, loader: Callable[[str], Awaitable[Any]], capacity: int) -> None:
        self._loader = loader
        self.policy = ModelCachePolicy(capacity)
        self._models: dict[str, Any] = {}
        self._loads: dict[str, asyncio.Future[Any]] = {}

    async def get(self, model_id: str) -> Any:
        decision = self.policy.request(model_id)
        while decision.action is Action.WAIT:
            await asyncio.wait(set(self._loads.values()), return_when=asyncio.FIRST_COMPLETED)
            decision = self.policy.request(model_id)
        if decision.action is Action.HIT:
            return self._models[model_id]
        if decision.action is Action.JOIN:
            return await asyncio.shield(self._loads[model_id])
        for old in decision.evict:
            await _unload(old, self._models.pop(old, None))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._loads[model_id] = future
        try:
            model = await self._loader(model_id)
        except BaseException as exc:
            self.policy.load_failed(model_id)
            future.set_exception(exc)
            future.exception()  # mark retrieved: joiners re-raise it themselves
            raise
        finally:
            self._loads.pop(model_id, None)
        self._models[model_id] = model
        self.policy.loaded(model_id)
        future.set_result(model)
        return model


async def _unload(model_id: str, model: Any) -> None:
    """Free an evicted model before the next one loads: ``await model.aclose()`` or
    ``model.close()`` when it has one; otherwise dropping the last reference runs its
    ``__del__``. A failure to close is logged, not raised: the request wants its own model."""
    try:
        close = getattr(model, "aclose", None)
        if close is not None and inspect.iscoroutinefunction(close):
            await close()
            return
        close = getattr(model, "close", None)
        if callable(close):
            result = close()
            if inspect.isawaitable(result):
                await result
    except Exception:
        logger.exception("serve: closing evicted model %r failed", model_id)


# Every cache in this process, so the replica can report which models it holds.
_caches: list[_ModelCache] = []


def loaded_models() -> list[str]:
    """Models held or being loaded by this process's multiplexed loaders."""
    found: list[str] = []
    for cache in _caches:
        found.extend(cache.policy.models)
        found.extend(sorted(cache.policy.loading))
    return found


def model_slots() -> int | None:
    """How many models this process's multiplexed loaders keep (None: it has none yet)."""
    return sum(cache.policy.capacity for cache in _caches) if _caches else None


def multiplexed(
    func: Callable[..., Any] | None = None, *, max_num_models_per_replica: int = 3
) -> Any:
    """Mark an async model loader: ``await self.get_model(model_id)`` loads once, then caches.

    Each replica keeps at most ``max_num_models_per_replica`` models, least recently used out
    first; an evicted model is closed (``aclose()``/``close()`` if it has one, else its last
    reference is dropped, which runs ``__del__``) before the model that replaces it loads.

    ::

        @serve.deployment
        class Models:
            @serve.multiplexed(max_num_models_per_replica=3)
            async def get_model(self, model_id: str):
                return load(model_id)

            async def __call__(self, request):
                model = await self.get_model(serve.get_multiplexed_model_id())
    """
    if max_num_models_per_replica < 1:
        raise ValueError(
            f"max_num_models_per_replica={max_num_models_per_replica} must be >= 1"
        )

    def wrap(loader: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(loader):
            raise TypeError(
                f"@serve.multiplexed needs an async loader (async def), got {loader!r}"
            )
        params = list(inspect.signature(loader).parameters)
        is_method = bool(params) and params[0] == "self"
        attr = f"__ember_model_cache_{loader.__name__}"

        # These closures reach replicas by value (cloudpickle copies the module globals they
        # use), so they find the registry of caches through an import at call time: a copy of
        # the list would leave the replica reporting no models to the router.
        if is_method:

            @functools.wraps(loader)
            async def method(self: Any, model_id: str) -> Any:
                cache = self.__dict__.get(attr)
                if cache is None:
                    from ember.serve import _multiplex

                    cache = _multiplex._ModelCache(
                        functools.partial(loader, self), max_num_models_per_replica
                    )
                    self.__dict__[attr] = cache
                    _multiplex._caches.append(cache)
                return await cache.get(model_id)

            return method

        holder: list[_ModelCache] = []

        @functools.wraps(loader)
        async def function(model_id: str) -> Any:
            if not holder:
                from ember.serve import _multiplex

                holder.append(_multiplex._ModelCache(loader, max_num_models_per_replica))
                _multiplex._caches.append(holder[0])
            return await holder[0].get(model_id)

        return function

    if func is not None:
        return wrap(func)
    return wrap
