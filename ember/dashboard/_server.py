"""The driver's observability server: the dashboard, ``/metrics`` and the CLI's queries.

One HTTP handler serves two listeners:

- always (unless ``EMBER_SESSION_SERVER=0``), a Unix socket in the owner-only session folder,
  for the ``ember`` CLI (see ``_session``);
- with ``ember.init(include_dashboard=True)``, a TCP port on ``dashboard_host`` (default
  127.0.0.1) for a browser and for Prometheus.

Every request must carry the session's token (``?token=`` once, after which a cookie holds it;
or an ``Authorization: Bearer`` / ``X-Ember-Token`` header), so another local user who can reach
127.0.0.1 gets nothing. The server only answers GETs of state: it has no control actions.

It is the standard library's ``http.server``: the core needs no web framework, and this server
answers a handful of JSON reads a second.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import selectors
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ember.core import _observe
from ember.dashboard import _session
from ember.dashboard._series import ServeSeries

logger = logging.getLogger("ember")

DEFAULT_PORT = 8265
SAMPLE_S = 1.0
COOKIE = "ember_token"
_STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
           "index.html": "text/html; charset=utf-8"}
_LIST_KINDS = ("actors", "tasks", "objects", "nodes")
_VIEW_KINDS = ("serve", "data", "train", "rl")


class Service:
    """The listeners, the sampler thread and the session file of one running driver."""

    def __init__(self, backend: Any, *, dashboard: bool, host: str, port: int | None,
                 session: bool) -> None:
        self.backend = backend
        self.store = _observe.become_driver()
        self.token = secrets.token_urlsafe(24)
        self.serve_series = ServeSeries()
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._socket_path: str | None = None
        self._session_path: str | None = None
        self.url: str | None = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        if session:
            self._listen_unix()
        if dashboard:
            self._listen_tcp(host, port)
        if session and self._socket_path is not None:
            self._session_path = _session.write_session(
                self._socket_path, self.token, self.url, getattr(backend, "name", "?"),
                list(sys.argv))
        self._thread = threading.Thread(target=self._loop, name="ember-dashboard", daemon=True)
        self._thread.start()

    # -- listeners --------------------------------------------------------------------------
    def _listen_unix(self) -> None:
        try:
            path = _session.socket_path()
            if os.path.exists(path):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # the socket file is the owner's alone from its first moment
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            sock.listen(16)
        except (OSError, _session.SessionError) as exc:
            logger.warning("ember: the ember CLI will not find this program (%s)", exc)
            return
        self._socket_path = path
        self._listeners.append(sock)

    def _listen_tcp(self, host: str, port: int | None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            try:
                sock.bind((host, DEFAULT_PORT if port is None else port))
            except OSError:
                if port is not None:
                    raise
                sock.bind((host, 0))  # the default port is taken (another program): any port
        except OSError as exc:
            sock.close()
            raise OSError(f"the dashboard cannot listen on {host}:{port}: {exc}; pick another "
                          "dashboard_port (0 picks a free one)") from exc
        sock.listen(64)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}/?token={self.token}"
        self._listeners.append(sock)

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        selector = selectors.DefaultSelector()
        for sock in self._listeners:
            selector.register(sock, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        next_sample = time.monotonic()
        try:
            while not self._closed:
                now = time.monotonic()
                if now >= next_sample:
                    self._sample()
                    next_sample = now + SAMPLE_S
                for key, _ in selector.select(max(0.0, next_sample - now)):
                    if key.fileobj == self._wake_r or self._closed:
                        continue
                    listener = key.fileobj
                    assert isinstance(listener, socket.socket)
                    try:
                        conn, address = listener.accept()
                    except OSError:
                        continue
                    conn.settimeout(10)
                    threading.Thread(target=self._handle, args=(conn, address),
                                     name="ember-dashboard-request", daemon=True).start()
        finally:
            selector.close()

    def _sample(self) -> None:
        try:
            self.serve_series.sample(time.time(), self.store.merged())
        except Exception:  # best-effort telemetry: a bad sample must not stop the server
            logger.debug("ember dashboard: sampling failed", exc_info=True)

    def _handle(self, conn: socket.socket, address: Any) -> None:
        try:
            _Handler(conn, address or ("local", 0), self)
        except Exception:  # a client that went away mid-answer
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        for sock in self._listeners:
            sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._socket_path is not None:
            _session.remove_session(self._socket_path)
        _session.remove_session(self._session_path)

    # -- what the routes answer ----------------------------------------------------------------
    def state(self, kind: str, filters: list[tuple[str, str, Any]] | None = None,
              limit: int | None = None, detail: bool = False) -> Any:
        return self.backend.state(kind, filters, limit, detail)

    def views(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.store.view(kind)

    def metrics_text(self) -> bytes:
        from ember.dashboard._prometheus import render

        status = {"task_summary": self.state("task_summary"),
                  "actors": self.state("actors"), "nodes": self.state("nodes")}
        views = {kind: self.views(kind) for kind in _VIEW_KINDS}
        return render(status, self.store.merged(), views)

    def logs(self, target: str, after: int = 0) -> dict[str, Any]:
        """Lines of an actor (by id), a task (by id), a deployment (by name) or a pid."""
        store = self.store
        target = target.strip()
        actor_ids, pids, task_id = self._resolve_log_target(target)
        if task_id is not None:
            lines = store.log_lines(lambda log: True, after, task_id=task_id)
        else:
            lines = store.log_lines(
                lambda log: log.actor_id in actor_ids or log.pid in pids, after)
        last = max((line["seq"] for line in lines), default=after)
        return {"target": target, "lines": lines, "last": last,
                "found": bool(actor_ids or pids or task_id is not None)}

    def _resolve_log_target(self, target: str) -> tuple[set[int], set[int], int | None]:
        numeric = _parse_hex(target)
        if numeric is not None:
            for log in self.store.processes():
                if log.actor_id == numeric:
                    return {numeric}, set(), None
        for row in self.state("tasks"):
            if row["task_id"] == target:
                return set(), set(), numeric
        # a deployment: "name" or "app/name" or "app#name"
        wanted = target.replace("#", "/")
        actor_ids: set[int] = set()
        for app, view in self.views("serve").items():
            for name, dep in ((view.get("state") or {}).get("deployments") or {}).items():
                if wanted in (name, f"{app}/{name}"):
                    for replica in dep.get("replicas", []):
                        found = _parse_hex(replica.get("actor_id") or "")
                        if found is not None:
                            actor_ids.add(found)
        if actor_ids:
            return actor_ids, set(), None
        if target.isdigit():
            return set(), {int(target)}, None
        if numeric is not None:  # an actor id that wrote nothing yet
            return {numeric}, set(), None
        return set(), set(), None


def _parse_hex(text: str) -> int | None:
    if not text or len(text) > 32:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def _filters(values: list[str]) -> list[tuple[str, str, str]]:
    out = []
    for text in values:
        for predicate in ("!=", "="):
            key, sep, value = text.partition(predicate)
            if sep:
                out.append((key.strip(), predicate, value.strip()))
                break
        else:
            raise ValueError(f"filter {text!r} must look like key=value or key!=value")
    return out


class _Handler(BaseHTTPRequestHandler):
    server_version = "ember"
    protocol_version = "HTTP/1.0"

    def __init__(self, conn: socket.socket, address: Any, service: Service) -> None:
        self.service = service
        super().__init__(conn, address, service)  # type: ignore[arg-type]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on the driver's stderr

    # -- auth -------------------------------------------------------------------------------
    def _token_ok(self, query: dict[str, list[str]]) -> tuple[bool, bool]:
        """(authorized, came in the query string: set the cookie)."""
        expected = self.service.token
        offered = []
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered.append(header[7:].strip())
        if self.headers.get("X-Ember-Token"):
            offered.append(self.headers["X-Ember-Token"].strip())
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                offered.append(value)
        for value in offered:
            if hmac.compare_digest(value.encode(), expected.encode()):
                return True, False
        for value in query.get("token", []):
            if hmac.compare_digest(value.encode(), expected.encode()):
                return True, True
        return False, False

    def _refuse(self, code: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self._refuse(405, "the ember dashboard only answers GET: it has no control actions")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        authorized, set_cookie = self._token_ok(query)
        if not authorized:
            self._refuse(403, "this ember program needs its token: open the URL it printed "
                              "(…/?token=…), or use the ember CLI")
            return
        try:
            self._route(parts.path, query, set_cookie)
        except ValueError as exc:
            self._refuse(400, str(exc))
        except Exception as exc:  # the runtime shut down under the request, say
            self._refuse(500, f"{type(exc).__name__}: {exc}")

    def _send(self, body: bytes, content_type: str, set_cookie: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if set_cookie:
            self.send_header("Set-Cookie", f"{COOKIE}={self.service.token}; Path=/; HttpOnly; "
                                           "SameSite=Strict")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, set_cookie: bool = False) -> None:
        self._send(json.dumps(value, default=str).encode(), "application/json", set_cookie)

    def _route(self, path: str, query: dict[str, list[str]], set_cookie: bool) -> None:
        service = self.service
        one = {k: v[-1] for k, v in query.items() if v}
        if path in ("/", "/index.html"):
            self._send(_asset("index.html"), _STATIC["index.html"], set_cookie)
        elif path.startswith("/static/") and path[8:] in _STATIC:
            self._send(_asset(path[8:]), _STATIC[path[8:]], set_cookie)
        elif path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
        elif path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            self._send(service.metrics_text(), CONTENT_TYPE_LATEST, set_cookie)
        elif path == "/api/status":
            self._json({**service.state("status"), "pid": os.getpid(), "argv": sys.argv,
                        "dashboard_url": None,
                        "views": {k: len(service.views(k)) for k in _VIEW_KINDS}}, set_cookie)
        elif path.startswith("/api/list/") and path[10:] in _LIST_KINDS:
            limit = int(one.get("limit", "100"))
            rows = service.state(path[10:], _filters(query.get("filter", [])), limit,
                                 one.get("detail") == "1")
            self._json(rows, set_cookie)
        elif path == "/api/summary/tasks":
            self._json(service.state("task_summary"), set_cookie)
        elif path == "/api/logs":
            self._json(service.logs(one.get("id", ""), int(one.get("after", "0"))), set_cookie)
        elif path.startswith("/api/views/") and path[11:] in _VIEW_KINDS:
            kind = path[11:]
            answer: dict[str, Any] = {"views": service.views(kind)}
            if kind == "serve":
                answer["series"] = service.serve_series.history()
            self._json(answer, set_cookie)
        else:
            self._refuse(404, f"no such page {path!r}")


def _asset(name: str) -> bytes:
    return resources.files("ember.dashboard").joinpath("static", name).read_bytes()


_service: Service | None = None
_service_lock = threading.Lock()


def start(backend: Any, *, dashboard: bool, host: str = "127.0.0.1", port: int | None = None,
          session: bool = True) -> Service | None:
    """Start the observability server of a driver (``ember.init`` calls it)."""
    global _service
    _observe.become_driver()
    if not (dashboard or session):
        return None
    with _service_lock:
        if _service is not None:
            _service.close()
        _service = Service(backend, dashboard=dashboard, host=host, port=port, session=session)
    if dashboard and hasattr(backend, "start_observe_drain"):
        backend.start_observe_drain()  # the ray backend: workers' views come to this driver
    if _service.url is not None:
        print(f"ember: dashboard at {_service.url}", file=sys.stderr, flush=True)
    return _service


def stop() -> None:
    global _service
    with _service_lock:
        service, _service = _service, None
    if service is not None:
        service.close()


def current() -> Service | None:
    """The running service (``ember.util.state.dashboard_url`` and tests read it)."""
    return _service
