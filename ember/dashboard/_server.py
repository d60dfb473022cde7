"""The driver's observability server: the dashboard, ``/metrics`` and the CLI's queries.

One HTTP handler serves two listeners:

- always (unless ``EMBER_SESSION_SERVER=0``), a Unix socket in the owner-only session folder,
  for the ``ember`` CLI (see ``_session``);
- with ``ember.init(include_dashboard=True)``, a TCP port on ``dashboard_host`` (default
  127.0.0.1) for a browser and for Prometheus.

Every request must carry the session's token (``?token=`` once, after which a cookie holds it;
or an ``Authorization: Bearer`` / ``X-Ember-Token`` header), so another local user who can reach
127.0.0.1 gets nothing. The server only answers GETs of state: it has no control actions.

The requests are answered by ``_handler`` (the standard library's ``http.server``: the core
needs no web framework for a handful of JSON reads a second), imported on the first request so
that ``ember.init`` does not pay for it.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import sys
import threading
import time
from typing import Any

from ember.core import _observe
from ember.dashboard import _session
from ember.dashboard._series import ServeSeries
from ember.errors import SessionError

logger = logging.getLogger("ember")

DEFAULT_PORT = 8265
SAMPLE_S = 1.0
VIEW_KINDS = ("serve", "data", "train", "rl")


class Service:
    """The listeners, the sampler thread and the session file of one running driver."""

    def __init__(self, backend: Any, *, dashboard: bool, host: str, port: int | None,
                 session: bool) -> None:
        self.backend = backend
        self.store = _observe.become_driver()
        self.token = os.urandom(24).hex()
        self.serve_series = ServeSeries()
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._socket_path: str | None = None
        self._session_path: str | None = None
        self.url: str | None = None
        # Cookies are per host, not per port: each program's has its own name.
        self.cookie = "ember_token"
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
        except (OSError, SessionError) as exc:
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
        self.cookie = f"ember_token_{bound}"
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
        if self._session_path is not None:
            # Programs killed before they could clean up leave their files behind; the CLI
            # clears them when it looks, and so does every program that starts, off its path.
            try:
                _session.live_sessions()
            except (OSError, SessionError) as exc:
                logger.debug("ember: could not clear dead programs' session files: %s", exc)
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
            from ember.dashboard._handler import Handler

            Handler(conn, address or ("local", 0), self)
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
        views = {kind: self.views(kind) for kind in VIEW_KINDS}
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
