"""The answers of the driver's observability server (see ``_server``): one HTTP request each,
authenticated with the session's token, GET only."""

from __future__ import annotations

import hmac
import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ember.dashboard._server import VIEW_KINDS

if TYPE_CHECKING:
    from ember.dashboard._server import Service

_STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
           "index.html": "text/html; charset=utf-8"}
_LIST_KINDS = ("actors", "tasks", "objects", "nodes")


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


class Handler(BaseHTTPRequestHandler):
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
            if name == self.service.cookie:
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
            self.send_header("Set-Cookie", f"{self.service.cookie}={self.service.token}; Path=/; "
                                           "HttpOnly; SameSite=Strict")
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
                        "views": {k: len(service.views(k)) for k in VIEW_KINDS}}, set_cookie)
        elif path.startswith("/api/list/") and path[10:] in _LIST_KINDS:
            limit = int(one.get("limit", "100"))
            rows = service.state(path[10:], _filters(query.get("filter", [])), limit,
                                 one.get("detail") == "1")
            self._json(rows, set_cookie)
        elif path == "/api/summary/tasks":
            self._json(service.state("task_summary"), set_cookie)
        elif path == "/api/logs":
            self._json(service.logs(one.get("id", ""), int(one.get("after", "0"))), set_cookie)
        elif path.startswith("/api/views/") and path[11:] in VIEW_KINDS:
            kind = path[11:]
            answer: dict[str, Any] = {"views": service.views(kind)}
            if kind == "serve":
                answer["series"] = service.serve_series.history()
            self._json(answer, set_cookie)
        else:
            self._refuse(404, f"no such page {path!r}")


def _asset(name: str) -> bytes:
    return resources.files("ember.dashboard").joinpath("static").joinpath(name).read_bytes()


