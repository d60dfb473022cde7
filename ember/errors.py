"""Every exception that ember raises on purpose.

The tree::

    EmberError
    ├── TaskError                 a user exception raised remotely; the object raised by ``get``
    │                             is also an instance of the user's own exception type
    ├── WorkerCrashedError        the process running a task died and retries were used up
    ├── ActorDiedError            the actor's process died (or it was killed) and cannot restart
    │   └── ActorUnavailableError the actor is restarting; the call was not delivered
    ├── ActorAlreadyExistsError   an actor with that name lives already (also a ``ValueError``)
    ├── GetTimeoutError           ``get(..., timeout=)`` ran out (also a ``TimeoutError``)
    │   └── util.multiprocessing.TimeoutError  a Pool result's ``get(timeout)`` ran out (also
    │                                          ``multiprocessing.TimeoutError``)
    ├── ObjectLostError           the object's value is gone (its owner died, or it was freed)
    ├── ObjectStoreFullError      Ray's object store is full (the local backend spills instead)
    ├── TaskCancelledError        ``ember.cancel`` stopped the task
    ├── OutOfMemoryError          the task was stopped because the machine ran out of memory
    ├── ResourceError             a request that can never be satisfied (also a ``ValueError``)
    ├── RuntimeEnvSetupError      a ``runtime_env`` that this backend cannot set up
    ├── SerializationError        a value could not be pickled (also a ``TypeError``)
    ├── TrainingFailedError       an ``ember.train`` run failed and used up its ``max_failures``
    ├── StorageError              a storage path cannot be read or written (also an ``OSError``)
    │   └── CorruptCheckpointError a checkpoint's manifest or a file of it is damaged
    ├── SessionError              the ``ember`` CLI finds no running program, or an unsafe
    │                             session folder
    ├── UnsupportedPlatformError  the local backend cannot run on this OS (also a ``RuntimeError``)
    ├── RuntimeNotInitializedError / BackendError   misuse of the runtime itself
    │
    │   the libraries' own, defined beside the code that raises them:
    ├── data.StrictModeError      a UDF or a constructor made data without named columns
    │                             (also a ``ValueError``)
    ├── serve.DeploymentFailedError       an application's replicas could not start
    │                                     (also a ``RuntimeError``)
    ├── serve.DeploymentUnavailableError  the deployment was deleted, or serve shut down,
    │                                     while a call waited for a replica (``RuntimeError``)
    ├── serve.BackPressureError   every replica is busy and this caller's queue is full
    │                             (also a ``RuntimeError``)
    ├── serve.llm.OpenAIError     a request the OpenAI-shaped endpoint refuses, with its status
    ├── serve.llm.EngineOverloadedError   the engine's waiting line is full (``RuntimeError``)
    ├── serve.llm.EngineClosedError       the engine closed while the request waited or ran
    │                                     (also a ``RuntimeError``)
    ├── util.queue.Empty / Full   a ``Queue`` call ran out of time (also ``queue.Empty`` /
    │                             ``queue.Full`` of the standard library)
    └── ConfigError               ``ember serve run``'s YAML file is malformed (also a
                                  ``ValueError``; ``ember/serve/_app_file.py``)

Where one is also a builtin type (``ValueError``, ``RuntimeError``, ...), an ``except`` clause
for that type catches it too. All of them survive pickling, so they travel between processes unchanged.
Ray's names for them (``RayTaskError``, ``RayActorError``, ...) are in ``ember.exceptions``.
``tests/test_errors.py`` fails when an exception reachable from a public module is not an
``EmberError`` or is missing here.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = [
    "ActorAlreadyExistsError",
    "ActorDiedError",
    "ActorUnavailableError",
    "BackendError",
    "CorruptCheckpointError",
    "EmberError",
    "GetTimeoutError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "ResourceError",
    "RuntimeEnvSetupError",
    "RuntimeNotInitializedError",
    "SerializationError",
    "SessionError",
    "StorageError",
    "TaskCancelledError",
    "TaskError",
    "TrainingFailedError",
    "UnsupportedPlatformError",
    "WorkerCrashedError",
]


class EmberError(Exception):
    """Base class of every exception ember raises on purpose."""


class UnsupportedPlatformError(EmberError, RuntimeError):
    """The local backend cannot run here (it needs Linux: fork, ``/dev/shm``, Unix sockets);
    the message names what to use instead (the ray backend)."""


class WorkerCrashedError(EmberError):
    """The worker process running the task died (for example SIGKILL) and no retries were left."""


class ActorDiedError(EmberError):
    """The actor is dead: its process exited or was killed and it has no restarts left."""


class ActorUnavailableError(ActorDiedError):
    """The actor is restarting and the call could not be delivered to it."""


class ActorAlreadyExistsError(EmberError, ValueError):
    """An actor was created with a name that a live actor in that namespace already has."""


class GetTimeoutError(EmberError, TimeoutError):
    """``ember.get`` (or ``wait``/``next`` on a generator) ran past its ``timeout``."""


class ObjectLostError(EmberError):
    """The object's value can no longer be read."""


class ObjectStoreFullError(EmberError):
    """Ray's object store had no room for a value (the ray backend); the local backend spills
    objects to disk instead of raising this."""


class TaskCancelledError(EmberError):
    """The task was cancelled with ``ember.cancel`` before it finished."""


class OutOfMemoryError(EmberError):
    """The task's worker was stopped because the machine ran low on memory."""


class ResourceError(EmberError, ValueError):
    """A task or actor asked for resources that the cluster can never provide."""


class RuntimeEnvSetupError(EmberError):
    """A ``runtime_env`` could not be set up: the backend does not support one of its keys
    (``pip`` on the local backend, say), or setting it up failed."""


class SerializationError(EmberError, TypeError):
    """A value (an argument, a return value, a function) could not be pickled."""


class TrainingFailedError(EmberError):
    """A training run failed for good; the cause is chained (``__cause__``) and named in the
    message, and the partial ``Result`` is on ``.result`` when there is one."""


class StorageError(EmberError, OSError):
    """A storage path could not be written or read; the message names the path and the cause."""


class CorruptCheckpointError(StorageError):
    """A committed checkpoint cannot be trusted: its manifest does not parse, or a file of it
    differs from the size or sha256 the manifest recorded. ``path`` is the checkpoint's folder;
    the message names the damaged file."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
class SessionError(EmberError):
    """The ``ember`` CLI found no running program to talk to (or its session folder is open to
    other users); the message says where it looked and what to do."""


class RuntimeNotInitializedError(EmberError, RuntimeError):
    """The runtime was used in a way that needs ``ember.init`` first (or it was shut down)."""


class BackendError(EmberError, RuntimeError):
    """The backend failed in a way that is not the user's code's fault."""


class TaskError(EmberError):
    """A user exception raised inside a task or actor method.

    ``ember.get`` raises an instance of a class derived from both ``TaskError`` and the user's
    exception type, so ``except ValueError`` catches a remote ``ValueError``. ``cause`` is the
    original exception and the message carries the remote traceback.
    """

    cause: BaseException | None
    remote_traceback: str
    function_name: str

    def __init__(
        self,
        function_name: str = "<unknown>",
        remote_traceback: str = "",
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(function_name, remote_traceback)
        self.function_name = function_name
        self.remote_traceback = remote_traceback
        self.cause = cause

    def __str__(self) -> str:
        cause = self.cause
        head = f"{self.function_name} failed"
        if cause is not None:
            head += f" with {type(cause).__name__}: {cause}"
        if self.remote_traceback:
            return f"{head}\n\nRemote traceback:\n{self.remote_traceback.rstrip()}"
        return head

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task_error, (self.function_name, self.remote_traceback, self.cause))

    @property
    def traceback_str(self) -> str:
        """The remote traceback (Ray's ``RayTaskError.traceback_str``)."""
        return self.remote_traceback

    def as_instanceof_cause(self) -> TaskError:
        """This error, which is already an instance of the cause's type (Ray's
        ``RayTaskError.as_instanceof_cause``)."""
        return self

    @classmethod
    def wrap(
        cls, cause: BaseException, function_name: str, remote_traceback: str
    ) -> TaskError:
        """An exception that is a ``TaskError`` and an instance of ``type(cause)``."""
        return _rebuild_task_error(function_name, remote_traceback, cause)


_dual_classes: dict[type, type] = {}


def _dual_class(cause_type: type[BaseException]) -> type[TaskError] | None:
    if issubclass(cause_type, TaskError):
        return None
    cached = _dual_classes.get(cause_type)
    if cached is not None:
        return cached
    try:
        dual = type(
            f"TaskError({cause_type.__name__})",
            (TaskError, cause_type),
            {"__module__": __name__, "__str__": TaskError.__str__,
             "__reduce__": TaskError.__reduce__},
        )
    except TypeError:  # layout conflicts, final classes: fall back to a plain TaskError
        return None
    _dual_classes[cause_type] = dual
    return dual


def _rebuild_task_error(
    function_name: str, remote_traceback: str, cause: BaseException | None
) -> TaskError:
    if isinstance(cause, TaskError):
        return cause
    dual = _dual_class(type(cause)) if cause is not None else None
    if dual is None or cause is None:
        return TaskError(function_name, remote_traceback, cause)
    try:
        try:
            err = type(cause).__new__(dual, *cause.args)
        except Exception:
            err = BaseException.__new__(dual)
        err.__dict__.update(getattr(cause, "__dict__", {}))
        err.args = cause.args
    except Exception:
        return TaskError(function_name, remote_traceback, cause)
    err.function_name = function_name
    err.remote_traceback = remote_traceback
    err.cause = cause
    return err


def picklable_cause(exc: BaseException) -> BaseException:
    """``exc`` when it survives a pickle round trip, else a plain stand-in carrying its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        pass
    try:  # classes defined in a function or in a script's __main__ travel by value
        import cloudpickle

        pickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        return EmberError(f"{type(exc).__qualname__}: {exc} (the original exception could "
                          "not be pickled, so this stand-in carries its message)")
