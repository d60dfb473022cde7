"""``inspect_serializability``: find what in an object cannot be pickled, as Ray's
``ray.util.inspect_serializability``.

ember ships functions, classes and values with cloudpickle; when one of them fails to pickle,
this walks into it (a function's globals and closure, a class's methods, an object's
attributes, a container's items) to name the innermost members that fail.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from typing import IO, Any

_RULE = "=" * 72


class FailureTuple:
    """One member that could not be pickled: ``obj`` itself, the ``name`` it has in
    ``parent``, and ``path``, the names that lead to it from the inspected object."""

    __slots__ = ("name", "obj", "parent", "path")

    def __init__(self, obj: Any, name: str, parent: Any, path: str = "") -> None:
        self.obj = obj
        self.name = name
        self.parent = parent
        self.path = path or name

    def _key(self) -> tuple[int, str, int]:
        return (id(self.obj), self.name, id(self.parent))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FailureTuple) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"FailTuple({self.name} [path={self.path}, obj={self.obj!r}, "
                f"parent={self.parent!r}])")


def _pickle_error(obj: Any) -> str | None:
    """Why cloudpickle cannot pickle ``obj`` (None when it can)."""
    import cloudpickle

    try:
        cloudpickle.dumps(obj)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
    return None


def _members(obj: Any) -> Iterator[tuple[str, Any, str]]:
    """``(name, member, what)`` of what pickling ``obj`` pickles too."""
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        func = obj.__func__ if inspect.ismethod(obj) else obj
        try:
            found = inspect.getclosurevars(func)
        except (TypeError, ValueError):  # builtins, odd code objects: nothing to walk
            return
        for name, value in found.globals.items():
            yield name, value, "global"
        for name, value in found.nonlocals.items():
            yield name, value, "captured"
        if inspect.ismethod(obj):
            yield "__self__", obj.__self__, "bound to"
    elif inspect.isclass(obj):
        for name, value in vars(obj).items():
            if inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
                yield name, getattr(value, "__func__", value), "method"
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield repr(key), value, "item"
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for index, value in enumerate(obj):
            yield f"[{index}]", value, "item"
    else:
        for name, value in getattr(obj, "__dict__", {}).items():
            yield name, value, "attribute"
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                yield name, getattr(obj, name), "attribute"


def _inspect(obj: Any, name: str, path: str, parent: Any, depth: int,
             failures: set[FailureTuple], seen: set[int], indent: str,
             out: IO[str] | None) -> None:
    """``obj`` failed to pickle: record its failing members (or itself, when none fails)."""
    seen.add(id(obj))
    failing = []
    if depth > 0:
        for member_name, member, what in _members(obj):
            if id(member) in seen or inspect.ismodule(member):
                continue
            error = _pickle_error(member)
            if error is not None:
                failing.append((member_name, member, what, error))
    if not failing:
        if depth > 0 or next(_members(obj), None) is None:
            print(f"{indent}(nothing inside {name!r} fails on its own: {name!r} itself cannot "
                  "be pickled)", file=out)
        else:
            print(f"{indent}(depth reached: not looking inside {name!r})", file=out)
        failures.add(FailureTuple(obj, name, parent, path))
        return
    for member_name, member, what, error in failing:
        print(f"{indent}{what} {member_name!r}: {_short(member)}", file=out)
        print(f"{indent}    !!! FAIL serialization: {error}", file=out)
        _inspect(member, member_name, f"{path} -> {member_name}", obj, depth - 1, failures,
                 seen, indent + "    ", out)


def _short(obj: Any, limit: int = 100) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def inspect_serializability(base_obj: Any, name: str | None = None, depth: int = 3,
                            print_file: IO[str] | None = None,
                            ) -> tuple[bool, set[FailureTuple]]:
    """Whether ``base_obj`` can be pickled (with cloudpickle, as ember ships it), and if not,
    which members cannot: ``(serializable, failures)``, each failure a ``FailureTuple``
    (``obj``, ``name``, ``parent``, ``path``).

    Prints a tree of what failed, ``depth`` levels into functions' globals and closures,
    classes' methods, objects' attributes and containers' items (to ``print_file``, by
    default standard output)::

        lock = threading.Lock()

        def task():
            return lock

        ok, failures = inspect_serializability(task, name="task")
        # ok is False; the one failure is the global 'lock' (path 'task -> lock')
    """
    out = print_file if print_file is not None else sys.stdout
    name = name if name is not None else _short(base_obj, 60)
    print(_RULE, file=out)
    print(f"Checking serializability of {name}", file=out)
    print(_RULE, file=out)
    error = _pickle_error(base_obj)
    if error is None:
        print(f"{name} can be serialized", file=out)
        return True, set()
    print(f"!!! FAIL serialization: {error}", file=out)
    failures: set[FailureTuple] = set()
    _inspect(base_obj, name, name, None, depth, failures, set(), "    ", out)
    print(_RULE, file=out)
    print("These could not be serialized:", file=out)
    for failure in sorted(failures, key=lambda f: f.path):
        print(f"    {failure.path}: {_short(failure.obj)}", file=out)
    print("Create them inside the function or the class that uses them (or pass what they "
          "hold instead), so that they are not shipped with it.", file=out)
    print(_RULE, file=out)
    return False, failures
