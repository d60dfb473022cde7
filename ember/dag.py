"""Graph nodes, as Ray's ``ray.dag``: the input of a deployment graph and what is read from it.

ember runs such graphs in serve (``ember.serve.drivers.DAGDriver``, Ray 2.5's deployment
graphs)::

    from ember.dag import InputNode          # or: from ember.serve.dag import InputNode

    with InputNode() as user_input:
        first, second = user_input[0], user_input["key"]

A node only records what to do; nothing runs until a request reaches the graph. Ray's core DAGs
of tasks and actors (``f.bind(...)`` on a remote function, ``dag.execute()``) are not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DAGNode", "InputAttributeNode", "InputNode"]


class DAGNode:
    """A node of a graph: a value that is known only when a request runs the graph."""

    def _dag_values(self) -> list[Any]:
        """The values this node refers to (other nodes among them)."""
        return []

    def _dag_map(self, swap: Callable[[Any], Any]) -> DAGNode:
        """A copy of this node with each value it refers to replaced by ``swap(value)``."""
        return self

    def __getitem__(self, key: int | str) -> InputAttributeNode:
        return InputAttributeNode(self, key, "__getitem__")

    def __getattr__(self, name: str) -> InputAttributeNode:
        if name.startswith("_"):  # pickle, copy and friends probe dunder names
            raise AttributeError(name)
        return InputAttributeNode(self, name, "__getattr__")


class InputNode(DAGNode):
    """What a request gives the graph: ``handle.predict.remote(x)`` (or an HTTP request's body,
    after the driver's adapter) makes it ``x``.

    With several arguments (``predict.remote(1, 2, key=3)``), ``user_input[0]`` is the first
    and ``user_input["key"]`` (or ``user_input.key``) the keyword argument; with one argument,
    ``user_input[0]``, ``user_input["key"]`` and ``user_input.key`` index into it, as in Ray.
    Use it as a context manager (``with InputNode() as user_input:``) or plainly.

    >>> user_input = InputNode()
    >>> user_input[0]
    InputAttributeNode(InputNode()[0])
    """

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return "InputNode()"


class InputAttributeNode(DAGNode):
    """A part of the input: ``user_input[key]`` or ``user_input.name``."""

    def __init__(self, parent: DAGNode, key: int | str, accessor: str) -> None:
        self._parent = parent
        self._key = key
        self._accessor = accessor

    def _dag_values(self) -> list[Any]:
        return [self._parent]

    def _dag_map(self, swap: Callable[[Any], Any]) -> DAGNode:
        return InputAttributeNode(swap(self._parent), self._key, self._accessor)

    def _select(self, value: Any) -> Any:
        """The part of ``value`` (what the parent node gave) that this node stands for."""
        if isinstance(value, DAGInputData):
            return value[self._key]
        if self._accessor == "__getattr__":
            return getattr(value, str(self._key))
        return value[self._key]

    def _path(self) -> str:
        parent = self._parent
        path = parent._path() if isinstance(parent, InputAttributeNode) else repr(parent)
        if self._accessor == "__getattr__":
            return f"{path}.{self._key}"
        return f"{path}[{self._key!r}]"

    def __repr__(self) -> str:
        return f"InputAttributeNode({self._path()})"


class DAGInputData:
    """The arguments of a request with more than one (or with keywords): ``[i]`` is the i-th
    positional argument, ``["name"]`` the keyword argument ``name``."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            if not -len(self.args) <= key < len(self.args):
                raise IndexError(f"the graph's input has {len(self.args)} positional "
                                 f"arguments; there is no argument {key}")
            return self.args[key]
        if key not in self.kwargs:
            raise KeyError(f"the graph's input has no keyword argument {key!r} (it has "
                           f"{sorted(self.kwargs)})")
        return self.kwargs[key]


def input_value(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What ``InputNode`` stands for in a request with these arguments: the one argument itself,
    or a ``DAGInputData`` of them all."""
    if len(args) == 1 and not kwargs:
        return args[0]
    return DAGInputData(args, kwargs)
