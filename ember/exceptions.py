"""Ray's exception names (``ray.exceptions``), mapped onto ember's own tree (``ember.errors``).

A program written for Ray keeps its ``except ray.exceptions.X`` clauses when ``ray`` becomes
``ember``: each name here is the ember class raised for that case, so the clause catches what
ember raises. Several of Ray's names are one ember class where ember does not tell the cases
apart::

    RayError                                    EmberError
    RayTaskError                                TaskError (``.cause`` is the user's exception;
                                                the error is also an instance of its type)
    RayActorError, ActorDiedError               ActorDiedError
    ActorUnavailableError                       ActorUnavailableError (an ActorDiedError)
    ActorAlreadyExistsError                     ActorAlreadyExistsError
    GetTimeoutError                             GetTimeoutError
    TaskCancelledError                          TaskCancelledError
    WorkerCrashedError, NodeDiedError,
    LocalRayletDiedError                        WorkerCrashedError
    ObjectLostError, ObjectFreedError,
    OwnerDiedError, ObjectFetchTimedOutError,
    ObjectReconstructionFailedError             ObjectLostError
    ObjectStoreFullError                        ObjectStoreFullError
    OutOfMemoryError                            OutOfMemoryError
    RaySystemError                              BackendError
    TaskUnschedulableError,
    ActorUnschedulableError                     ResourceError (a request that can never fit)
    RuntimeEnvSetupError                        RuntimeEnvSetupError

One difference: ember's ``ActorDiedError`` also catches ``ActorUnavailableError`` (in Ray both
are siblings under ``RayActorError``).
"""

from __future__ import annotations

from ember.errors import (
    ActorAlreadyExistsError,
    ActorDiedError,
    ActorUnavailableError,
    BackendError,
    EmberError,
    GetTimeoutError,
    ObjectLostError,
    ObjectStoreFullError,
    OutOfMemoryError,
    ResourceError,
    RuntimeEnvSetupError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)

__all__ = [
    "ActorAlreadyExistsError",
    "ActorDiedError",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "GetTimeoutError",
    "LocalRayletDiedError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectFreedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "RuntimeEnvSetupError",
    "TaskCancelledError",
    "TaskUnschedulableError",
    "WorkerCrashedError",
]

RayError = EmberError
RayTaskError = TaskError
RayActorError = ActorDiedError
RaySystemError = BackendError
NodeDiedError = WorkerCrashedError
LocalRayletDiedError = WorkerCrashedError
ObjectFreedError = ObjectLostError
OwnerDiedError = ObjectLostError
ObjectFetchTimedOutError = ObjectLostError
ObjectReconstructionFailedError = ObjectLostError
TaskUnschedulableError = ResourceError
ActorUnschedulableError = ResourceError
