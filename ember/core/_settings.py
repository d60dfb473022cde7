"""The one place where ember reads environment variables (environment settings).

Everything else receives a frozen config object or calls a function here, so behaviour is
explicit and testable. The variables, their defaults and what they do are the table in the
README's "Environment variables" section; ``tests/test_structure.py`` fails when a variable
read here is missing from it, or when an ``EMBER_*`` variable is read anywhere else.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ember.core import _runtime_env

SHM_DIR = "/dev/shm"
# The local backend's one node: its address, and the resources that name it (as Ray gives each
# node ``node:<ip>`` and the head ``node:__internal_head__``, so that work can be pinned there).
LOCAL_NODE_IP = "127.0.0.1"
NODE_RESOURCES = {f"node:{LOCAL_NODE_IP}": 1.0, "node:__internal_head__": 1.0}
SEGMENT_PREFIX = "ember-"


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def _detect_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
    except OSError:
        return []


@dataclass(frozen=True)
class LocalConfig:
    """Settings of the local backend, resolved once at ``init``."""

    num_cpus: float
    gpu_ids: tuple[str, ...]
    resources: dict[str, float] = field(default_factory=dict)
    object_store_memory: int = 0
    # Ray's "memory" resource (bytes): what tasks and actors may ask for with memory=...;
    # by default the machine's memory less the object store's, as Ray reckons it.
    memory: float = 0.0
    spill_dir: str = ""
    inline_threshold: int = 100 * 1024
    namespace: str = "default"
    # A synchronous actor call's caller, and an actor that runs calls one at a time, poll for
    # the next message this long before they block (see _transport.spin_poll).
    spin_s: float = 50e-6
    # ember.init(runtime_env=...) as the local backend applies it in every worker (see
    # ember.core._runtime_env); None when not given.
    runtime_env: dict[str, Any] | None = None


def resolve_local_config(
    *,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
    namespace: str | None,
    runtime_env: dict[str, Any] | None = None,
    memory: int | None = None,
) -> LocalConfig:
    gpus = _detect_gpus()
    if num_gpus is not None:
        if num_gpus < 0:
            raise ValueError(f"num_gpus={num_gpus} must be >= 0")
        if int(num_gpus) <= len(gpus):
            gpus = gpus[: int(num_gpus)]
        else:  # more GPUs than detected: trust the caller, add ids not taken yet
            extra = (str(i) for i in range(10_000) if str(i) not in gpus)
            gpus = gpus + [next(extra) for _ in range(int(num_gpus) - len(gpus))]
    if num_cpus is not None and num_cpus < 0:
        raise ValueError(f"num_cpus={num_cpus} must be >= 0")
    for name, amount in (resources or {}).items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"resources may not name {name!r}: use num_cpus / num_gpus instead")
        if amount < 0:
            raise ValueError(f"resource {name!r}={amount} must be >= 0")
    store = object_store_memory
    if store is None:
        env = os.environ.get("EMBER_OBJECT_STORE_MEMORY")
        store = int(env) if env else int(_total_memory() * 0.3)
    if store <= 0:
        raise ValueError(f"object_store_memory={store} must be a positive number of bytes")
    if memory is None:
        memory = max(0, _total_memory() - store)
    elif isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory < 0:
        raise ValueError(f"_memory={memory!r} must be a number of bytes >= 0")
    return LocalConfig(
        num_cpus=float(num_cpus if num_cpus is not None else (os.cpu_count() or 1)),
        gpu_ids=tuple(gpus),
        resources=dict(resources or {}),
        object_store_memory=store,
        memory=float(memory),
        spill_dir=os.environ.get("EMBER_SPILL_DIR") or tempfile.gettempdir(),
        inline_threshold=int(os.environ.get("EMBER_INLINE_THRESHOLD", 100 * 1024)),
        namespace=namespace or "default",
        spin_s=_spin_seconds(os.environ.get("EMBER_SPIN_US")),
        runtime_env=_runtime_env.for_local(runtime_env, "ember.init"),
    )


def _spin_seconds(env: str | None) -> float:
    if not env:
        return 50e-6
    try:
        micros = float(env)
    except ValueError:
        raise ValueError(f"EMBER_SPIN_US={env!r} must be a number of microseconds") from None
    if not 0 <= micros <= 10_000:
        raise ValueError(f"EMBER_SPIN_US={env!r} must be between 0 and 10000 microseconds")
    return micros * 1e-6


def default_backend() -> tuple[str, str | None]:
    return resolve_backend(None, None)


def resolve_backend(backend: str | None, address: str | None) -> tuple[str, str | None]:
    """The backend and address an ``init`` uses: its own arguments, then ``EMBER_BACKEND`` and
    ``EMBER_ADDRESS`` for what they leave out (see ``choose_backend``)."""
    return choose_backend(backend, address, os.environ.get("EMBER_BACKEND") or None,
                          os.environ.get("EMBER_ADDRESS") or None)


def choose_backend(backend: str | None, address: str | None, env_backend: str | None,
                   env_address: str | None) -> tuple[str, str | None]:
    """Explicit arguments win; the environment fills what they leave out.

    An address only means something to the ``ray`` backend: one given with no backend picks it,
    and ``EMBER_ADDRESS`` is used only when the backend is ``ray``.
    """
    if backend is None:
        if address is not None:
            backend = "ray"
        else:
            backend = env_backend or ("ray" if env_address else "local")
    if backend == "ray" and address is None:
        address = env_address
    return backend, address


def log_level() -> int | None:
    """The level ``EMBER_LOG_LEVEL`` names (``DEBUG``, ``info``, ``30``, ...), or None."""
    env = os.environ.get("EMBER_LOG_LEVEL")
    if not env:
        return None
    if env.strip().isdigit():
        return int(env)
    level = logging.getLevelName(env.strip().upper())
    if not isinstance(level, int):
        raise ValueError(f"EMBER_LOG_LEVEL={env!r} is not a logging level: use DEBUG, INFO, "
                         "WARNING, ERROR or CRITICAL (or a number)")
    return level


def runtime_dir() -> str:
    """observe: the owner-only folder of session files (see ember.dashboard._session)."""
    explicit = os.environ.get("EMBER_RUNTIME_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "ember")
    return os.path.join(tempfile.gettempdir(), f"ember-{os.getuid()}")


def serve_direct_enabled() -> bool:
    """serve: whether the HTTP proxy reaches replicas on this machine over a direct socket;
    ``EMBER_SERVE_DIRECT=0`` sends every request as an actor call (for tests of that path)."""
    return os.environ.get("EMBER_SERVE_DIRECT") != "0"


def session_server_enabled() -> bool:
    """observe: whether ``ember.init`` opens the socket the ``ember`` CLI talks to."""
    return os.environ.get("EMBER_SESSION_SERVER", "1") not in ("0", "false", "no", "off")
