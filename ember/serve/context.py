"""What a replica knows about itself and about the request it serves (Ray's ``serve.context``).

- ``get_replica_context()`` (also ``serve.get_replica_context()``): the application, deployment
  and replica this code runs in, and the instance serving requests; usable in ``__init__``.
- The request context: the id of the request being served (the client's ``x-request-id``
  header, or one the proxy made; a handle call made while serving a request carries that
  request's id on), its route and its model id. ``_get_serve_request_context().request_id``
  reads it, as in Ray; the ``ember.serve`` logger stamps it on every record it handles in a
  replica (``record.request_id``).
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

__all__ = ["ReplicaContext", "get_replica_context"]


@dataclass
class ReplicaContext:
    """Runtime facts of one replica: ``app_name``, ``deployment``, ``replica_id`` (also
    ``replica_tag``, Ray's older name) and ``servable_object`` (the instance of the deployment
    class, or its function; ``None`` while the class's ``__init__`` runs)."""

    replica_id: str
    app_name: str
    deployment: str
    servable_object: Any = None
    rank: int | None = None

    @property
    def replica_tag(self) -> str:
        """Ray's older name of ``replica_id``."""
        return self.replica_id


_INTERNAL_REPLICA_CONTEXT: ReplicaContext | None = None


def get_replica_context() -> ReplicaContext:
    """The context of the replica this code runs in.

    Raises ``RuntimeError`` outside a replica (in the driver, or in a plain task or actor).
    """
    if _INTERNAL_REPLICA_CONTEXT is None:
        raise RuntimeError(
            "serve.get_replica_context() was called outside a serve replica; call it from the "
            "code of a deployment (its __init__ or its methods) while it runs in a replica"
        )
    return _INTERNAL_REPLICA_CONTEXT


def _get_internal_replica_context() -> ReplicaContext | None:
    return _INTERNAL_REPLICA_CONTEXT


def _set_internal_replica_context(context: ReplicaContext | None) -> None:
    global _INTERNAL_REPLICA_CONTEXT
    _INTERNAL_REPLICA_CONTEXT = context


@dataclass(slots=True)
class _RequestContext:
    """The request being served (each request has its own; as in Ray, not frozen: a frozen
    dataclass takes five times as long to make, and one is made per request)."""

    route: str = ""
    request_id: str = ""
    _internal_request_id: str = ""
    app_name: str = ""
    multiplexed_model_id: str = ""
    is_http_request: bool = False


_serve_request_context: contextvars.ContextVar[_RequestContext | None] = contextvars.ContextVar(
    "ember_serve_request_context", default=None
)
_NO_REQUEST = _RequestContext()


def _get_serve_request_context() -> _RequestContext:
    """The context of the request being served (empty fields outside a request)."""
    return _serve_request_context.get() or _NO_REQUEST


def new_request_id() -> str:
    """An id in uuid4's form: 80 random bits drawn once per process, then a counter. Not
    ``uuid.uuid4()``: its system call and object cost a fifth of what the proxy spends on a
    trivial request. Ids need to be unique, not secret."""
    return f"{_id_prefix}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    h = f"{random.SystemRandom().getrandbits(80):020x}"
    # version 4, RFC 4122 variant (the top two bits of the fourth group are 10)
    variant = "89ab"[int(h[15], 16) & 3]
    _id_prefix = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{variant}{h[16:19]}-"
    _id_counter = itertools.count()


_id_prefix = ""
_id_counter = itertools.count()
_new_id_prefix()
# A process forked from this one (the fork server's workers) must not repeat its ids.
os.register_at_fork(after_in_child=_new_id_prefix)


class RequestIdFilter(logging.Filter):
    """Stamps ``request_id``, ``application``, ``deployment`` and ``replica`` on log records,
    so a handler's format can show them (``%(request_id)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = _get_serve_request_context()
        replica = _INTERNAL_REPLICA_CONTEXT
        record.request_id = request.request_id
        record.application = replica.app_name if replica is not None else ""
        record.deployment = replica.deployment if replica is not None else ""
        record.replica = replica.replica_id if replica is not None else ""
        return True
