"""``@ember.remote`` functions and actor classes, and the handles they give."""

from __future__ import annotations

import inspect
import os
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

from ember.core import _options, _pickling


def _effective_returns(explicit: dict[str, Any], is_generator: bool) -> Any:
    if "num_returns" in explicit:
        return explicit["num_returns"]
    return "streaming" if is_generator else 1


class RemoteFunction:
    """A function that runs as a task: ``f.remote(*args)`` returns an ``ObjectRef`` at once."""

    def __init__(
        self,
        function: Callable[..., Any],
        options: dict[str, Any],
        *,
        _shared: dict[str, Any] | None = None,
    ) -> None:
        _options.validate_task_options(options)
        self._function = function
        self._explicit = dict(options)
        self._is_generator = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(
            function
        )
        merged = {**_options.TASK_DEFAULTS, **options}
        merged["num_returns"] = _effective_returns(options, self._is_generator)
        self._options = merged
        self._name = getattr(function, "__qualname__", repr(function))
        # The pickled code and its id are shared between .options() variants: code ships once.
        self._shared: dict[str, Any] = (
            _shared if _shared is not None else {"id": os.urandom(8).hex(), "target": function}
        )
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._name}() cannot be called directly; "
            f"use {self._name}.remote(...) (or .options(...).remote(...))"
        )

    def __repr__(self) -> str:
        return f"RemoteFunction({self._name})"

    @property
    def function_id(self) -> str:
        """The id this function's code travels under: workers load the code once per id."""
        return str(self._shared["id"])

    def pickled(self) -> bytes:
        """The function's code as cloudpickle bytes (made once, shared by ``.options()`` copies)."""
        return _code_of(self._shared, self._function)

    def options(self, **options: Any) -> RemoteFunction:
        """A copy of this function with some options changed for the next ``.remote`` calls."""
        return RemoteFunction(self._function, {**self._explicit, **options}, _shared=self._shared)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function as a task with these arguments; returns an ``ObjectRef`` at once.

        A generator function (or ``num_returns="streaming"``) returns an ``ObjectRefGenerator``,
        ``num_returns=n`` a list of ``n`` refs. Arguments that are ``ObjectRef`` s are resolved to
        their values before the task runs.

        >>> @ember.remote
        ... def add(a, b):
        ...     return a + b
        >>> ember.get(add.remote(1, add.remote(2, 3)))
        6
        """
        from ember.core._api import current_backend

        return current_backend().submit_task(self, args, kwargs, self._options)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._shared.get("pickling"):  # inside our own code (recursion): refer back by id
            return (_Late, ("function", self.function_id, self._explicit))
        return (_rebuild_function, (self.pickled(), self.function_id, self._explicit))


def _rebuild_function(code: bytes, function_id: str, explicit: dict[str, Any]) -> RemoteFunction:
    shared = _load_code(function_id, code)
    return RemoteFunction(shared["target"], explicit, _shared=shared)


# Code that has been shipped, by id: {"id", "code", "target"}. Lets a function or class that
# refers to itself be rebuilt once, and lets the stand-in below find it.
_known: dict[str, dict[str, Any]] = {}


def _code_of(shared: dict[str, Any], target: Any) -> bytes:
    """The pickled code of a function or class, made once and shared by its variants."""
    code: bytes | None = shared.get("code")
    if code is None:
        shared["pickling"] = True  # its own wrapper met inside the code becomes a _Late
        try:
            code = shared["code"] = _pickling.dumps_function(target)
        finally:
            shared["pickling"] = False
        _known.setdefault(shared["id"], shared)
    return code


def _load_code(code_id: str, code: bytes) -> dict[str, Any]:
    import cloudpickle

    shared = _known.setdefault(code_id, {"id": code_id, "code": code})
    if "target" not in shared:
        shared["target"] = cloudpickle.loads(code)
    return shared


def register_code(code_id: str, target: Any, code: bytes) -> None:
    """A worker loaded ``code`` as ``target``: later stand-ins for ``code_id`` resolve to it."""
    _known.setdefault(code_id, {"id": code_id, "code": code}).setdefault("target", target)


class _Late:
    """Stands for a remote function or actor class inside its own code (it calls itself).

    Pickling the code meets the wrapper again; this refers back to it by id instead, and
    resolves on first use, once the code has loaded.
    """

    def __init__(self, kind: str, code_id: str, explicit: dict[str, Any]) -> None:
        self._kind = kind
        self._code_id = code_id
        self._explicit = explicit

    def _resolve(self) -> Any:
        shared = _known[self._code_id]
        if self._kind == "function":
            return RemoteFunction(shared["target"], self._explicit, _shared=shared)
        return ActorClass(shared["target"], self._explicit, _shared=shared)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._resolve(), name)

    def __reduce__(self) -> tuple[Any, ...]:
        shared = _known.get(self._code_id)
        if shared is None or shared.get("pickling") or "code" not in shared:
            return (_Late, (self._kind, self._code_id, self._explicit))
        # Outside its own code's pickling, travel as the real thing: the next process (a Ray
        # worker, say) may never have seen this code.
        reduced: tuple[Any, ...] = self._resolve().__reduce__()
        return reduced


@dataclass(frozen=True)
class MethodMeta:
    num_returns: Any = 1
    is_generator: bool = False
    is_async: bool = False


@dataclass(frozen=True)
class ActorMeta:
    """What a handle needs to know about its actor's class, without the class itself."""

    class_name: str
    methods: dict[str, MethodMeta] = field(default_factory=dict)
    is_async: bool = False


def method_meta(cls: type) -> ActorMeta:
    methods: dict[str, MethodMeta] = {}
    any_async = False
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name != "__call__":
            continue
        if not (inspect.isfunction(member) or inspect.ismethod(member)):
            continue
        is_gen = inspect.isgeneratorfunction(member) or inspect.isasyncgenfunction(member)
        is_async = inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
        any_async = any_async or is_async
        explicit = getattr(member, "__ember_method_options__", {})
        methods[name] = MethodMeta(
            num_returns=_effective_returns(explicit, is_gen), is_generator=is_gen,
            is_async=is_async,
        )
    return ActorMeta(class_name=cls.__qualname__, methods=methods, is_async=any_async)


class ActorClass:
    """A class whose instances live in their own process: ``A.remote(...)`` gives a handle."""

    __class_getitem__: Any = classmethod(types.GenericAlias)  # ActorClass[Counter], as in Ray

    def __init__(
        self, cls: type, options: dict[str, Any], *, _shared: dict[str, Any] | None = None
    ) -> None:
        _options.validate_actor_options(options)
        self._cls = cls
        self._explicit = dict(options)
        self._options = {**_options.ACTOR_DEFAULTS, **options}
        self._shared: dict[str, Any] = _shared if _shared is not None else {
            "id": os.urandom(8).hex(), "meta": method_meta(cls), "target": cls,
        }
        self._shared.setdefault("meta", method_meta(cls))
        self.__doc__ = cls.__doc__

    @property
    def meta(self) -> ActorMeta:
        """What the driver knows of the class's methods (names, generators, ``async``)."""
        meta: ActorMeta = self._shared["meta"]
        return meta

    @property
    def class_id(self) -> str:
        """The id this class's code travels under: workers load the code once per id."""
        return str(self._shared["id"])

    def pickled(self) -> bytes:
        """The class's code as cloudpickle bytes (made once, shared by ``.options()`` copies)."""
        return _code_of(self._shared, self._cls)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = self._cls.__qualname__
        raise TypeError(
            f"actor class {name} cannot be instantiated directly; use {name}.remote(...)"
        )

    def __repr__(self) -> str:
        return f"ActorClass({self._cls.__qualname__})"

    def options(self, **options: Any) -> ActorClass:
        """A copy of this actor class with some options changed (``name``, ``namespace``,
        ``lifetime``, ``max_restarts``, ``max_concurrency``, ``num_cpus``, ...).

        >>> @ember.remote
        ... class Store:
        ...     def __init__(self):
        ...         self.items = []
        ...     def add(self, item):
        ...         self.items.append(item)
        ...         return len(self.items)
        >>> store = Store.options(name="store", max_concurrency=1).remote()
        >>> ember.get(ember.get_actor("store").add.remote("apple"))
        1
        >>> ember.kill(store)
        """
        return ActorClass(self._cls, {**self._explicit, **options}, _shared=self._shared)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create an actor: start its process, run ``__init__`` there with these arguments, and
        return its ``ActorHandle`` at once (method calls made meanwhile wait for ``__init__``).

        >>> @ember.remote
        ... class Counter:
        ...     def __init__(self, start):
        ...         self.value = start
        ...     def add(self, n):
        ...         self.value += n
        ...         return self.value
        >>> counter = Counter.remote(10)
        >>> ember.get([counter.add.remote(1), counter.add.remote(2)])
        [11, 13]
        >>> ember.kill(counter)
        """
        from ember.core._api import current_backend

        if self._options.get("get_if_exists") and not self._options.get("name"):
            raise ValueError(
                f"get_if_exists=True on {self.meta.class_name} needs a name to look the actor "
                "up by: pass name=... in .options() or @ember.remote")
        return current_backend().create_actor(self, args, kwargs, self._options)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._shared.get("pickling"):
            return (_Late, ("actor", self.class_id, self._explicit))
        return (_rebuild_actor_class, (self.pickled(), self.class_id, self._explicit, self.meta))


def _rebuild_actor_class(
    code: bytes, class_id: str, explicit: dict[str, Any], meta: ActorMeta
) -> ActorClass:
    shared = _load_code(class_id, code)
    shared.setdefault("meta", meta)
    return ActorClass(shared["target"], explicit, _shared=shared)


class ActorHandle:
    """A handle to a live actor: ``handle.method.remote(...)`` returns an ``ObjectRef``."""

    __class_getitem__: Any = classmethod(types.GenericAlias)  # ActorHandle[Counter], as in Ray

    def __init__(self, actor_id: Any, meta: ActorMeta, runtime: Any) -> None:
        self._actor_id = actor_id
        self._meta = meta
        self._rt = runtime
        runtime.add_actor_ref(actor_id)

    def __del__(self) -> None:
        try:
            self._rt.remove_actor_ref(self._actor_id)
        except Exception:
            pass

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        meta = self._meta.methods.get(name)
        if meta is None:
            known = ", ".join(sorted(m for m in self._meta.methods if not m.startswith("_")))
            raise AttributeError(
                f"actor {self._meta.class_name} has no method {name!r} (methods: {known})"
            )
        return ActorMethod(self, name, meta, {})

    def __repr__(self) -> str:
        return f"ActorHandle({self._meta.class_name}, {self._actor_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self) -> tuple[Any, ...]:
        self._rt.on_actor_handle_pickled(self._actor_id)
        return (_rebuild_handle, (self._actor_id, self._meta))


def _rebuild_handle(actor_id: Any, meta: ActorMeta) -> ActorHandle:
    if _pickling.detached():
        from ember.core._refs import DETACHED

        return ActorHandle(actor_id, meta, DETACHED)
    from ember.core._api import current_backend

    return ActorHandle(actor_id, meta, current_backend())


class ActorMethod:
    """A method of an actor, reached through its handle: ``handle.method.remote(...)``."""

    def __init__(
        self, handle: ActorHandle, name: str, meta: MethodMeta, options: dict[str, Any]
    ) -> None:
        self._handle = handle
        self._name = name
        self._meta = meta
        self._options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor method {self._name}() cannot be called directly; use .{self._name}.remote()"
        )

    def options(self, **options: Any) -> ActorMethod:
        """A copy of this method with per-call options changed (``num_returns``, ...)."""
        _options.validate_method_options(options)
        return ActorMethod(self._handle, self._name, self._meta, {**self._options, **options})

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Call the method in the actor's process; returns an ``ObjectRef`` at once (an
        ``ObjectRefGenerator`` for a generator method). Calls run in the order they were made.
        """
        num_returns = self._options.get("num_returns", self._meta.num_returns)
        return self._handle._rt.submit_actor_task(
            self._handle, self._name, args, kwargs, num_returns
        )


def method(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Set per-method options on an actor method: ``@ember.method(num_returns=2)``."""
    _options.validate_method_options(options)

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__ember_method_options__ = options  # type: ignore[attr-defined]
        return fn

    return mark


@overload
def remote(target: Any, /) -> Any: ...


@overload
def remote(**options: Any) -> Callable[[Any], Any]: ...


def remote(*args: Any, **options: Any) -> Any:
    """Turn a function into a task or a class into an actor class.

    Used bare (``@ember.remote``) or with options (``@ember.remote(num_cpus=2)``)::

        @ember.remote
        def square(x):
            return x * x

        ember.get(square.remote(4))  # 16
    """
    if len(args) == 1 and not options and (inspect.isfunction(args[0]) or inspect.isclass(args[0])
                                           or callable(args[0])):
        return _make_remote(args[0], {})
    if args:
        raise TypeError(
            "@ember.remote takes a function or class, or only keyword options: "
            "@ember.remote(num_cpus=1)"
        )
    return lambda target: _make_remote(target, options)


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if inspect.isclass(target):
        return ActorClass(target, options)
    if callable(target):
        return RemoteFunction(target, options)
    raise TypeError(f"@ember.remote needs a function or a class, got {target!r}")
