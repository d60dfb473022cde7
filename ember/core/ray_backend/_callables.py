"""User functions and classes in the shape Ray can run.

Ray refuses ``async def`` tasks, and it resumes generators with ``send()``, which breaks a body
that does ``yield from`` over a plain iterator (``'range_iterator' object has no attribute
'send'`` in Ray 2.60). ember supports both on the local backend, so here they are wrapped in
plain generators and functions before Ray sees them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any


def runnable(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as Ray can run it as a task.

    Ray refuses ``async def`` tasks, and it resumes generators with ``send()``, which breaks a
    body that does ``yield from`` over a plain iterator; both are wrapped in a plain generator.
    """
    if inspect.isasyncgenfunction(function):
        @functools.wraps(function)
        def drive_async_generator(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.new_event_loop()
            agen = function(*args, **kwargs)
            try:
                while True:
                    try:
                        item = loop.run_until_complete(agen.__anext__())
                    except StopAsyncIteration:
                        return
                    yield item
            finally:
                loop.run_until_complete(agen.aclose())
                loop.close()

        return drive_async_generator
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        def run_coroutine(*args: Any, **kwargs: Any) -> Any:
            return returnable(asyncio.run(function(*args, **kwargs)), function)

        return run_coroutine
    if inspect.isgeneratorfunction(function):
        return _drive_generator(function)

    @functools.wraps(function)
    def run_plain(*args: Any, **kwargs: Any) -> Any:
        return returnable(function(*args, **kwargs), function)

    return run_plain


def raise_error(error: BaseException) -> Any:
    """A task that raises ``error`` (the references of an infeasible request)."""
    raise error


def raise_error_streaming(error: BaseException) -> Any:
    """A streaming task that raises ``error`` before its first item."""
    raise error
    yield  # a generator function


def returnable(value: Any, function: Callable[..., Any]) -> Any:
    """``value``, unless it is a generator object: then the local backend's clear
    ``SerializationError`` naming ``function``, instead of Ray's pickling error."""
    from ember.core._serialization import refuse_generator

    refuse_generator(value, getattr(function, "__qualname__", repr(function)))
    return value


def _drive_generator(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def drive_generator(*args: Any, **kwargs: Any) -> Any:
        produced = function(*args, **kwargs)
        try:
            for item in produced:  # noqa: UP028 (yield from would pass Ray's send() on)
                yield item
        finally:
            produced.close()

    return drive_generator


def actor_runnable(cls: type) -> type:
    """A subclass of ``cls`` whose methods Ray runs as the local backend does: generator
    methods wrapped as in ``runnable``, ``num_returns="dynamic"`` methods collected as in
    ``collecting``, and other methods refusing to return a generator object."""
    namespace: dict[str, Any] = {}
    for name, member in _vars_of(cls).items():
        if not inspect.isfunction(member) or (name.startswith("__") and name != "__call__"):
            continue
        options = getattr(member, "__ember_method_options__", {})
        if options.get("num_returns") == "dynamic":
            namespace[name] = _collecting_method(member)
        elif inspect.isgeneratorfunction(member):
            namespace[name] = _drive_generator(member)
        elif inspect.iscoroutinefunction(member):
            namespace[name] = _returnable_coroutine(member)
        elif not inspect.isasyncgenfunction(member):
            namespace[name] = _returnable_method(member)
    namespace.update(__module__=cls.__module__, __qualname__=cls.__qualname__,
                     __doc__=cls.__doc__)
    return type(cls.__name__, (cls,), namespace)


def _returnable_method(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        return returnable(method(*args, **kwargs), method)

    return call


def _returnable_coroutine(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        return returnable(await method(*args, **kwargs), method)

    return call


def collecting(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a generator function, made runnable) as a ``num_returns="dynamic"``
    task: it runs to its end and returns a ``DynamicObjectRefGenerator`` of its items, put in
    the object store one by one (Ray's own ``"dynamic"`` is deprecated)."""
    produce = runnable(function)

    @functools.wraps(function)
    def collect(*args: Any, **kwargs: Any) -> Any:
        import ember
        from ember.core._refs import DynamicObjectRefGenerator

        refs = []
        try:
            for item in produce(*args, **kwargs):
                refs.append(ember.put(item))
        except Exception as exc:
            # As in Ray (and on the local backend), the error is the last object: the items
            # yielded before it stay readable. A task that raises it makes that object.
            refs.append(ember.remote(max_retries=0)(raise_error).remote(exc))
        return DynamicObjectRefGenerator(refs)

    _hide_generator(collect, function)
    return collect


def _hide_generator(wrapper: Callable[..., Any], function: Callable[..., Any]) -> None:
    """Ray unwraps what it runs to see whether it is a generator: a wrapper that collects one
    keeps only the generator's signature."""
    del wrapper.__wrapped__  # type: ignore[attr-defined]
    wrapper.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]


def _collecting_method(method: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def collect_async(*args: Any, **kwargs: Any) -> Any:
            import ember
            from ember.core._refs import DynamicObjectRefGenerator

            return DynamicObjectRefGenerator(
                [ember.put(item) async for item in method(*args, **kwargs)])

        _hide_generator(collect_async, method)
        return collect_async
    return collecting(method)


def _vars_of(cls: type) -> dict[str, Any]:
    """Attributes defined on ``cls`` and its bases, nearest first, as stored (not bound)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):
        found.update(vars(klass))
    return found
