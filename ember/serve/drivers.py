"""Ray 2.5's ``DAGDriver``: the ingress deployment that runs deployment graphs.

::

    from ember import serve
    from ember.serve.dag import InputNode
    from ember.serve.drivers import DAGDriver
    from ember.serve.http_adapters import json_request

    with InputNode() as user_input:
        model = Model.bind()
        graph = combine.bind(model.forward.bind(user_input), user_input)

    handle = serve.run(DAGDriver.bind(graph, http_adapter=json_request))
    handle.predict.remote(3).result()        # or ember.get(handle.predict.remote(3))
    # HTTP: POST / with a JSON body -> json_request -> the graph -> a JSON response

``DAGDriver.bind({"/a": graph_a, "/b": graph_b})`` serves several graphs, by path under the
application's route prefix (``predict_with_route("/a", ...)`` from Python). Each call in a
graph runs on its deployment's replicas; the driver only sends the calls.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ember.serve._adapter_params import readers_for
from ember.serve._deployment import deployment
from ember.serve._graph import run_graph

__all__ = ["DAGDriver"]

Adapter = Callable[[Any], Awaitable[Any]]


class _DAGDriver:
    """Runs one graph, or several by route: for ``predict``/``predict_with_route`` calls from
    Python, and for HTTP requests through the ``http_adapter``."""

    def __init__(self, dags: Any, http_adapter: Any = None) -> None:
        if isinstance(dags, dict):
            for route in dags:
                if not isinstance(route, str) or not route.startswith("/"):
                    raise ValueError(f"DAGDriver route {route!r} must be a path that starts "
                                     "with '/', e.g. {'/add': graph}")
            self._dags = dict(dags)
            self._routed = True
        else:
            self._dags = {"/": dags}
            self._routed = False
        self._adapter = make_adapter(http_adapter)
        self._bad_input = _bad_input()

    async def predict(self, *args: Any, **kwargs: Any) -> Any:
        """Run the graph with these arguments (they are what its ``InputNode`` stands for)."""
        if self._routed:
            raise ValueError(f"this DAGDriver serves several graphs ({sorted(self._dags)}); "
                             "call predict_with_route(route, ...)")
        return await run_graph(self._dags["/"], args, kwargs)

    async def predict_with_route(self, route_path: str, *args: Any, **kwargs: Any) -> Any:
        """Run the graph of route ``route_path`` with these arguments."""
        if route_path not in self._dags:
            raise KeyError(f"DAGDriver has no graph at route {route_path!r} (it has "
                           f"{sorted(self._dags)})")
        return await run_graph(self._dags[route_path], args, kwargs)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        root = request.scope.get("root_path", "") or ""
        path = request.url.path
        route = (path[len(root):] if path.startswith(root) else path) or "/"
        if self._routed:
            dag = self._dags.get(route.rstrip("/") or "/")
            if dag is None:
                return JSONResponse({"detail": f"no graph at route {route!r}; routes: "
                                               f"{sorted(self._dags)}"}, status_code=404)
        else:
            dag = self._dags["/"]
        try:
            value = await self._adapter(request)
        except self._bad_input as exc:
            return JSONResponse({"detail": _detail(exc)}, status_code=422)
        result = await run_graph(dag, (value,), {})
        if isinstance(result, (str, bytes, bytearray)):
            # Ray's driver answered through FastAPI, which sends every result as JSON (a
            # string too, quoted); other values the replica sends as JSON already.
            text = result if isinstance(result, str) else bytes(result).decode(errors="replace")
            return JSONResponse(text)
        return result


DAGDriver = deployment(_DAGDriver, name="DAGDriver")


def _bad_input() -> tuple[type[BaseException], ...]:
    import pydantic

    from ember.serve._adapter_params import InvalidRequest
    from ember.serve.http_adapters import BadRequestBody

    return (BadRequestBody, InvalidRequest, pydantic.ValidationError)


def _detail(exc: BaseException) -> Any:
    detail = getattr(exc, "detail", None)
    if isinstance(detail, list):  # InvalidRequest: already FastAPI's shape
        return detail
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic's ValidationError: FastAPI's shape of 422 details
        return json.loads(exc.json(include_url=False))  # type: ignore[attr-defined]
    return str(exc)


def make_adapter(spec: Any) -> Adapter:
    """An ``async (request) -> input`` from what ``http_adapter=`` was: ``None`` (the request
    itself), an import path (``"module.function"`` or ``"module:function"``), a pydantic model
    class (the JSON body validated against it), or a function (see
    ``ember.serve.http_adapters``)."""
    if spec is None:
        from ember.serve.http_adapters import starlette_request

        spec = starlette_request
    if isinstance(spec, str):
        spec = _import(spec)
    if inspect.isclass(spec):
        model = spec

        def validated(payload: Any) -> Any:
            return payload

        validated.__annotations__ = {"payload": model}
        spec = validated
    if not callable(spec):
        raise TypeError(f"http_adapter={spec!r} is not a function, an import path or a "
                        "pydantic model class")
    read = readers_for(spec)

    async def adapt(request: Any) -> Any:
        try:
            result = spec(*await read(request))
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            close = getattr(request, "close", None)
            if close is not None:
                await close()  # a form's uploaded files, as FastAPI closes them

    return adapt


def _import(path: str) -> Any:
    module, _, name = path.replace(":", ".").rpartition(".")
    if not module:
        raise ValueError(f"http_adapter={path!r} must be an import path such as "
                         "'ember.serve.http_adapters.json_request'")
    return getattr(importlib.import_module(module), name)
