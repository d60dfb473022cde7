"""Session files: how the ``ember`` CLI finds a running program.

A driver writes ``<pid>.json`` into an owner-only folder (mode 0700: ``$XDG_RUNTIME_DIR/ember``,
else ``<temp dir>/ember-<uid>``; ``EMBER_RUNTIME_DIR`` overrides it). The file (mode 0600)
holds the path of the program's Unix socket (in the same folder) and a random token that every
request must carry; the dashboard's URL, when one runs, carries the same token. The folder is
checked before use: it must be a real directory (not a link), owned by this user, and closed to
everyone else, so no other local user can read the token or plant a socket.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from typing import Any

from ember.core import runtime_dir
from ember.errors import SessionError


@dataclass(frozen=True)
class Session:
    pid: int
    socket: str
    token: str
    dashboard_url: str | None
    started: float
    backend: str
    argv: list[str]
    path: str

    @property
    def alive(self) -> bool:
        return _pid_alive(self.pid)


def session_dir(create: bool = True) -> str:
    """The checked session folder (made with mode 0700 when missing and ``create``)."""
    path = runtime_dir()
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise SessionError(f"cannot create the session folder {path}: {exc}") from exc
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(info.st_mode):
        raise SessionError(f"session folder {path} is not a directory (a link?); remove it or "
                           "set EMBER_RUNTIME_DIR to a folder of your own")
    if info.st_uid != os.getuid():
        raise SessionError(f"session folder {path} belongs to uid {info.st_uid}, not to you "
                           f"(uid {os.getuid()}); set EMBER_RUNTIME_DIR to a folder of your own")
    if info.st_mode & 0o077:
        raise SessionError(f"session folder {path} is open to other users (mode "
                           f"{stat.S_IMODE(info.st_mode):o}); run chmod 700 {path}")
    return path


def write_session(socket_path: str, token: str, dashboard_url: str | None, backend: str,
                  argv: list[str]) -> str:
    """Write this process's session file (owner-only); returns its path."""
    folder = session_dir()
    path = os.path.join(folder, f"{os.getpid()}.json")
    record = {"pid": os.getpid(), "socket": socket_path, "token": token,
              "dashboard_url": dashboard_url, "started": time.time(), "backend": backend,
              "argv": argv}
    temporary = f"{path}.{os.urandom(4).hex()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out)
    os.replace(temporary, path)
    return path


def remove_session(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def socket_path() -> str:
    return os.path.join(session_dir(), f"{os.getpid()}.sock")


def read_session(path: str) -> Session | None:
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            return None
        with open(path) as source:
            record: dict[str, Any] = json.load(source)
        return Session(int(record["pid"]), str(record["socket"]), str(record["token"]),
                       record.get("dashboard_url"), float(record.get("started", 0.0)),
                       str(record.get("backend", "?")), list(record.get("argv", [])), path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_sessions() -> list[Session]:
    """Running programs of this user, newest first; files of programs that died are removed."""
    folder = session_dir(create=False)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if not name.endswith(".json"):
            continue
        session = read_session(os.path.join(folder, name))
        if session is None:
            continue
        if session.alive:
            found.append(session)
        else:  # killed before it could clean up
            remove_session(session.path)
            remove_session(session.socket)
    found.sort(key=lambda s: s.started, reverse=True)
    return found


def find_session(pid: int | None = None) -> tuple[Session, list[Session]]:
    """The program to talk to (``pid``, else the newest) and the others running."""
    sessions = live_sessions()
    if pid is not None:
        chosen = next((s for s in sessions if s.pid == pid), None)
        if chosen is None:
            known = ", ".join(str(s.pid) for s in sessions) or "none"
            raise SessionError(f"no running ember program with pid {pid} (running: {known})")
        return chosen, [s for s in sessions if s is not chosen]
    if not sessions:
        raise SessionError(
            f"no running ember program found in {runtime_dir()}: start one (ember.init() "
            "opens the session), or set EMBER_RUNTIME_DIR to the folder it uses")
    return sessions[0], sessions[1:]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's (pid reused): not ours
        return False
    return True
