"""Shared vocabulary of the driver and its workers.

Messages are tuples whose first item names them. Driver to worker::

    ("task", task_id, fn_id, fn_code|None, args, deps, return_ids, generator_id|None, gpu_ids,
     name, backpressure, runtime_env|None)
    ("actor", actor_id, class_id, class_code, args, deps, max_concurrency, gpu_ids, name,
     namespace, restarted, is_async, runtime_env|None, registered_name)
    ("call", call_id, method, args, deps, return_ids, generator_id|None, backpressure)
    ("reply", request_id, payload)        ("ack", generator_id, consumed)
    ("close_generator", generator_id)     ("cancel", task_id)        ("exit",)

Worker to driver::

    ("ready", pid)                        ("refs", [(object_id, +1|-1), ...])
    ("done", task_id, results|None, error|None, seconds)  (results and error both: the first
                                          len(results) returns are values, the rest the error)
    ("item", generator_id, index, stored, is_error)
    ("actor_ready", actor_id)             ("actor_failed", actor_id, error)
    ("actor_exit", reason)                (its method called sys.exit() or exit_actor())
    ("requeue", [task_id, ...])           ("put", object_id, stored[, is_error])
    ("submit", spec)                      ("request", request_id, kind, payload)

``backpressure`` is how many items a streaming generator may run ahead of its consumer, or
``COLLECT`` for a ``num_returns="dynamic"`` one. ``runtime_env`` is what
``ember.core._runtime_env.for_local`` made of the task's or actor's own ``runtime_env``. ``args`` is a serialized ``(args, kwargs)`` pair in which each top-level ``ObjectRef`` became a
``Dep(i)``; ``deps`` carries the i-th dependency's serialized value and whether it is an error.

On the wire a message is its pickle, except the two messages of a plain actor call, which make
up most of the traffic of synchronous calls and have a short fixed layout instead (see
``encode``): a ``call`` without arguments, dependencies or streaming, and the ``done`` of a work
item with one small result. A pickle starts with byte 0x80, so the first byte tells them apart.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

from ember.core import _serialization as ser

EMPTY_ARGS = ser.dumps(((), {}), None, 0)  # the serialized arguments of a call without any
_EMPTY: tuple[()] = ()

_CALL_TAG = 1
_DONE_TAG = 2
_CALL = struct.Struct("<BQQq")  # tag, call id, result id, backpressure; then the method name
_DONE = struct.Struct("<BQd")  # tag, work id, seconds; then the result's pickle


def encode(message: Any) -> bytes:
    """The bytes of one message (see the module's docstring)."""
    if type(message) is tuple:
        kind = message[0]
        try:
            if kind == "done" and len(message) == 5:
                results = message[2]
                if message[3] is None and results is not None and len(results) == 1:
                    data: bytes
                    data, buffers, contained = results[0]
                    if not buffers and not contained:
                        return _DONE.pack(_DONE_TAG, message[1], message[4]) + data
            elif kind == "call" and len(message) == 8:  # not a worker's ("call", spec)
                args = message[3]
                if (message[6] is None and not message[4] and len(message[5]) == 1
                        and (args is EMPTY_ARGS or args == EMPTY_ARGS)):
                    method: str = message[2]
                    return (_CALL.pack(_CALL_TAG, message[1], message[5][0], message[7])
                            + method.encode())
        except struct.error:  # a number out of the layout's range: pickle it
            pass
    return pickle.dumps(message, protocol=5)


def decode(frame: bytes) -> Any:
    """The message that ``encode`` made these bytes from."""
    tag = frame[0]
    if tag == _DONE_TAG:
        _, work_id, seconds = _DONE.unpack_from(frame)
        return ("done", work_id, ((frame[_DONE.size:], _EMPTY, _EMPTY),), None, seconds)
    if tag == _CALL_TAG:
        _, call_id, result_id, backpressure = _CALL.unpack_from(frame)
        return ("call", call_id, frame[_CALL.size:].decode(), EMPTY_ARGS, _EMPTY, [result_id],
                None, backpressure)
    return pickle.loads(frame)


class Dep:
    """Placeholder for the i-th top-level ``ObjectRef`` argument of a task."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (Dep, (self.index,))


class RemoteFailure:
    """The payload of a ``reply`` to a request that the driver answered with an exception."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteFailure, (self.error,))


# Worker ids occupy the high bits of object ids that a worker allocates itself.
ID_SHIFT = 40

DEFAULT_BACKPRESSURE = 16

# The ``backpressure`` of a ``num_returns="dynamic"`` task or call: it streams nothing; the
# worker runs the generator to its end and returns one ``DynamicObjectRefGenerator``.
COLLECT = -1
