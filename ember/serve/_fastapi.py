"""Class-based views for ``@serve.ingress(FastAPI app)``: methods of the deployment class as
route handlers, with ``self`` the replica's instance.

A method decorated with ``@app.get(...)`` inside the class body is registered by FastAPI before
the class exists, as a function whose first parameter, ``self``, FastAPI would take for a query
parameter. ``bind_methods`` rebuilds each such route with ``self`` supplied by a dependency
that reads the instance from the request scope (the replica puts it there), keeping every other
route option as it was. Imported only when an ingress app is a FastAPI one.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request

INSTANCE_KEY = "ember_serve_replica"


def replica_instance(request: Request) -> Any:
    """The deployment instance serving this request (FastAPI dependency)."""
    try:
        return request.scope[INSTANCE_KEY]
    except KeyError:
        raise RuntimeError(
            "this route is a method of a serve deployment class; it answers only inside a "
            "replica (serve.run(...) the deployment), not when the FastAPI app runs alone"
        ) from None


def bind_methods(app: FastAPI, cls: type) -> int:
    """Rebuild the routes of ``app`` whose endpoints are methods of ``cls``; returns how many."""
    methods = {id(value) for value in vars(cls).values() if inspect.isfunction(value)}
    options = [name for name in inspect.signature(APIRoute.__init__).parameters
               if name not in ("self", "path", "endpoint")]
    rebuilt = 0
    for index, route in enumerate(app.router.routes):
        if not isinstance(route, APIRoute) or id(route.endpoint) not in methods:
            continue
        kwargs = {name: getattr(route, name) for name in options if hasattr(route, name)}
        app.router.routes[index] = APIRoute(route.path, _as_view(route.endpoint), **kwargs)
        rebuilt += 1
    if rebuilt:
        app.openapi_schema = None  # built again, from the rebuilt routes
    return rebuilt


def _as_view(method: Any) -> Any:
    """``method`` as a FastAPI endpoint whose ``self`` comes from ``replica_instance``."""
    signature = inspect.signature(method)
    try:  # evaluated here, where the method's module is known; FastAPI would look in ours
        hints = typing.get_type_hints(method, include_extras=True)
    except Exception:
        hints = {}
    params = list(signature.parameters.values())
    if not params:
        raise TypeError(f"route handler {method.__qualname__} is in a class but takes no self")
    rebuilt = [params[0].replace(kind=inspect.Parameter.KEYWORD_ONLY,
                                 default=Depends(replica_instance),
                                 annotation=inspect.Parameter.empty)]
    for param in params[1:]:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        rebuilt.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY,
                                     annotation=hints.get(param.name, param.annotation)))
    returns = hints.get("return", signature.return_annotation)

    if inspect.iscoroutinefunction(method):
        async def view(**kwargs: Any) -> Any:
            return await method(**kwargs)
    else:
        def view(**kwargs: Any) -> Any:  # type: ignore[misc]
            return method(**kwargs)

    functools.update_wrapper(view, method)
    del view.__wrapped__  # type: ignore[attr-defined]
    view.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=rebuilt, return_annotation=returns)
    return view
