"""``ServeTestClient``: an ember.serve application under test, reached with httpx."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

import ember
from ember import serve


class ServeTestClient(httpx.Client):
    """Deploy an application on ember.serve and send it HTTP requests, like starlette's
    ``TestClient``; an ``httpx.Client`` whose base URL is the application's route prefix.

    The application runs as it would in production: replicas are actors behind ember's HTTP
    proxy, on 127.0.0.1 at a free port (``port``, the proxy's address, says which). ``handle``
    is the application's ``DeploymentHandle`` for calls from Python. Entering the client
    deploys the application (starting a local runtime with ``init_options`` if none is
    running, and serve if it is not running); leaving it deletes the application and stops
    whatever it started (serve, the runtime), in the reverse order.

    >>> from ember import serve
    >>> @serve.deployment
    ... class Greeter:
    ...     def __init__(self, greeting):
    ...         self.greeting = greeting
    ...     async def __call__(self, request):
    ...         return f"{self.greeting}, {request.query_params['name']}!"
    ...     def shout(self, name):
    ...         return f"{self.greeting.upper()}, {name.upper()}!"
    >>> with ServeTestClient(Greeter.bind("Hello"), route_prefix="/greet") as client:
    ...     print(client.get("/", params={"name": "Ada"}).text)
    ...     print(client.handle.shout.remote("Ada").result())
    Hello, Ada!
    HELLO, ADA!
    """

    def __init__(self, app: serve.Application | serve.Deployment, *, name: str = "default",
                 route_prefix: str = "/", timeout: float = 30.0,
                 init_options: dict[str, Any] | None = None, **client_options: Any) -> None:
        if not route_prefix.startswith("/"):
            raise ValueError(f"route_prefix={route_prefix!r} must start with '/'")
        super().__init__(timeout=timeout, **client_options)
        self.app = app
        self.name = name
        self.route_prefix = route_prefix
        self.init_options = dict(init_options or {})
        self._handle: serve.DeploymentHandle | None = None
        self._port: int | None = None
        self._started_runtime = False
        self._started_serve = False

    @property
    def handle(self) -> serve.DeploymentHandle:
        """The application's ingress ``DeploymentHandle`` (once the client is entered)."""
        if self._handle is None:
            raise RuntimeError("the application is not deployed yet: use "
                               "`with ServeTestClient(app) as client:` first")
        return self._handle

    @property
    def port(self) -> int:
        """The HTTP proxy's port on 127.0.0.1 (once the client is entered)."""
        if self._port is None:
            raise RuntimeError("the application is not deployed yet: use "
                               "`with ServeTestClient(app) as client:` first")
        return self._port

    def __enter__(self) -> ServeTestClient:
        super().__enter__()
        try:
            self._deploy()
        except BaseException:
            self._teardown()
            super().__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None,
                 exc: BaseException | None = None, tb: TracebackType | None = None) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            self._teardown()

    def _deploy(self) -> None:
        if not ember.is_initialized():
            ember.init(**self.init_options)
            self._started_runtime = True
        before = serve.status()
        self._started_serve = not before.applications and before.http_port is None
        self._handle = serve.run(self.app, name=self.name, route_prefix=self.route_prefix,
                                 port=0)
        port = serve.status().http_port
        if port is None:
            raise RuntimeError("serve's HTTP proxy did not start (proxy_location='Disabled'?)")
        self._port = port
        self.base_url = f"http://127.0.0.1:{port}{self.route_prefix.rstrip('/')}"

    def _teardown(self) -> None:
        try:
            if self._started_serve:
                serve.shutdown()
            elif self._handle is not None:
                serve.delete(self.name)
        finally:
            self._handle = None
            if self._started_runtime:
                self._started_runtime = False
                ember.shutdown()
