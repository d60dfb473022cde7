"""Ray 2.5's deployment graphs on ember's handles: the nodes that call deployments, and the
per-request run of a graph.

``model.forward.bind(x)`` (``model`` a bound class deployment) and ``combine.bind(x, y)`` (a
function deployment bound to graph nodes) record calls. ``serve.run`` deploys every deployment a
graph names and swaps each for its handle; the graph then travels to the deployment that runs it
(``DAGDriver``), which, per request, makes each call through its handle as soon as the calls it
depends on are sent: a result goes from one replica to the next without passing through the
driver (handle composition), and a node used twice is called once per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ember.dag import DAGNode, InputAttributeNode, InputNode, input_value


class DeploymentMethodNode(DAGNode):
    """``bound.method.bind(*args)``: call ``method`` of a bound class deployment."""

    def __init__(self, target: Any, method: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self._target = target  # an Application, a DeploymentHandle once deployed
        self._method = method
        self._args = args
        self._kwargs = kwargs

    def _dag_values(self) -> list[Any]:
        return [self._target, *self._args, *self._kwargs.values()]

    def _dag_map(self, swap: Callable[[Any], Any]) -> DAGNode:
        return DeploymentMethodNode(swap(self._target), self._method,
                                    tuple(swap(a) for a in self._args),
                                    {k: swap(v) for k, v in self._kwargs.items()})

    def __repr__(self) -> str:
        name = getattr(getattr(self._target, "deployment", None), "name", None) or \
            getattr(self._target, "deployment_name", "?")
        return f"DeploymentMethodNode({name}.{self._method})"


class DeploymentFunctionNode(DAGNode):
    """``function_deployment.bind(*nodes)``: call a function deployment with graph values."""

    def __init__(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._target = target
        self._args = args
        self._kwargs = kwargs

    def _dag_values(self) -> list[Any]:
        return [self._target, *self._args, *self._kwargs.values()]

    def _dag_map(self, swap: Callable[[Any], Any]) -> DAGNode:
        return DeploymentFunctionNode(swap(self._target), tuple(swap(a) for a in self._args),
                                      {k: swap(v) for k, v in self._kwargs.items()})

    def __repr__(self) -> str:
        name = getattr(getattr(self._target, "deployment", None), "name", None) or \
            getattr(self._target, "deployment_name", "?")
        return f"DeploymentFunctionNode({name})"


class MethodBinder:
    """``bound.method``: ``.bind(*args, **kwargs)`` records a call of that method."""

    def __init__(self, target: Any, method: str) -> None:
        self._target = target
        self._method = method

    def bind(self, *args: Any, **kwargs: Any) -> DeploymentMethodNode:
        """A graph node: call the method with these arguments (graph nodes among them)."""
        return DeploymentMethodNode(self._target, self._method, args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self._method}() of a bound deployment cannot be called directly; "
                        f"use .{self._method}.bind(...) in a deployment graph, or call it "
                        "through the handle serve.run returns")


def has_nodes(values: Any) -> bool:
    """Whether a graph node is among ``values`` (in lists, tuples and dicts too)."""
    for value in values:
        if isinstance(value, DAGNode):
            return True
        if isinstance(value, (list, tuple)) and has_nodes(value):
            return True
        if isinstance(value, dict) and has_nodes(list(value.values())):
            return True
    return False


async def run_graph(root: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The value of graph ``root`` for a request with these arguments (its deployments already
    swapped for handles). A bare handle as the root is called with the arguments."""
    from ember.serve._handle import DeploymentHandle

    if isinstance(root, DeploymentHandle):
        return await root.remote(*args, **kwargs)
    run = _Run(input_value(args, kwargs))
    return await run.settled(run._argument(root))


class _Run:
    """One request's pass over a graph: each node's value (or pending response), once."""

    def __init__(self, request_input: Any) -> None:
        self._input = request_input
        self._done: dict[int, Any] = {}
        self._keep: list[DAGNode] = []  # the ids above stay theirs while the run lasts

    def node(self, node: DAGNode) -> Any:
        key = id(node)
        if key not in self._done:
            self._done[key] = self._compute(node)
            self._keep.append(node)
        return self._done[key]

    def _compute(self, node: DAGNode) -> Any:
        from ember.serve._handle import DeploymentHandle

        if isinstance(node, InputNode):
            return self._input
        if isinstance(node, InputAttributeNode):
            return node._select(self._value_now(node._parent))
        if isinstance(node, (DeploymentMethodNode, DeploymentFunctionNode)):
            target = node._target
            if not isinstance(target, DeploymentHandle):
                raise TypeError(f"{node!r} is not deployed: run its graph with serve.run("
                                "DAGDriver.bind(graph))")
            if isinstance(node, DeploymentMethodNode):
                target = target.options(method_name=node._method)
            args = tuple(self._argument(a) for a in node._args)
            kwargs = {k: self._argument(v) for k, v in node._kwargs.items()}
            return _Deferred(target, args, kwargs)
        raise TypeError(f"ember cannot run graph node {node!r} in serve")

    def _value_now(self, node: DAGNode) -> Any:
        value = self.node(node)
        if isinstance(value, _Deferred):
            raise TypeError(f"{node!r} is a deployment call; its result cannot be indexed in "
                            "the graph (index the input, or index inside the deployment)")
        return value

    def _argument(self, value: Any) -> Any:
        if isinstance(value, DAGNode):
            return self.node(value)
        if isinstance(value, (list, tuple, dict)) and has_nodes(
                value.values() if isinstance(value, dict) else value):
            return _Nested(value, self)
        return value

    async def settled(self, value: Any) -> Any:
        """``value`` with pending calls awaited (the graph's output, or a nested argument)."""
        from ember.serve._handle import DeploymentResponse

        if isinstance(value, _Deferred):
            value = await value.send(self)
        if isinstance(value, DeploymentResponse):
            return await value
        if isinstance(value, _Nested):
            return await value.resolve()
        return value


class _Deferred:
    """A deployment call, sent when first needed (so each is sent once per request)."""

    def __init__(self, handle: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._handle = handle
        self._args = args
        self._kwargs = kwargs
        self._response: Any = None

    async def send(self, run: _Run) -> Any:
        """The call's ``DeploymentResponse``: top-level arguments that are responses go along
        unresolved (the replica receives their values), nested ones are awaited here."""
        if self._response is None:
            args = [await self._ready(a, run) for a in self._args]
            kwargs = {k: await self._ready(v, run) for k, v in self._kwargs.items()}
            if self._response is None:
                self._response = self._handle.remote(*args, **kwargs)
        return self._response

    @staticmethod
    async def _ready(value: Any, run: _Run) -> Any:
        if isinstance(value, _Deferred):
            return await value.send(run)
        if isinstance(value, _Nested):
            return await value.resolve()
        return value


class _Nested:
    """A list, tuple or dict argument holding graph values: resolved to plain values."""

    def __init__(self, value: Any, run: _Run) -> None:
        self._value = value
        self._run = run

    async def resolve(self) -> Any:
        return await self._resolve(self._value)

    async def _resolve(self, value: Any) -> Any:
        if isinstance(value, DAGNode):
            return await self._run.settled(self._run.node(value))
        if isinstance(value, list):
            return [await self._resolve(v) for v in value]
        if isinstance(value, tuple):
            return tuple([await self._resolve(v) for v in value])
        if isinstance(value, dict):
            return {k: await self._resolve(v) for k, v in value.items()}
        return value
