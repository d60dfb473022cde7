"""The exception tree of ``ember/errors.py``: relations, messages, and pickling."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pickle
import pkgutil
import queue
import re
import threading
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import ember
from ember import errors
from ember.errors import (
    ActorDiedError,
    ActorUnavailableError,
    EmberError,
    GetTimeoutError,
    ResourceError,
    RuntimeNotInitializedError,
    SerializationError,
    TaskError,
    picklable_cause,
)

ALL_ERRORS = [getattr(errors, name) for name in errors.__all__]


class CustomFailure(Exception):
    """A user exception whose constructor takes several arguments and sets attributes."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda c: c.__name__)
def test_every_error_is_an_ember_error(cls):
    assert issubclass(cls, EmberError)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (GetTimeoutError, TimeoutError),
        (ResourceError, ValueError),
        (SerializationError, TypeError),
        (RuntimeNotInitializedError, RuntimeError),
        (ActorUnavailableError, ActorDiedError),
    ],
)
def test_errors_are_caught_by_the_builtin_type_users_expect(cls, builtin):
    with pytest.raises(builtin):
        raise cls("x")


@pytest.mark.parametrize("cls", [c for c in ALL_ERRORS if c is not TaskError],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_every_error_survives_pickling(cls, dumps):
    error = cls("the actor died: its process exited (exit code -9)")

    copy = pickle.loads(dumps(error))

    assert type(copy) is cls
    assert str(copy) == str(error)


def test_task_error_wrapping_a_builtin_is_both_types_and_carries_the_traceback():
    cause = ValueError("bad input 42")

    error = TaskError.wrap(cause, "train_step", 'Traceback (most recent call last):\n  File "x"')

    assert isinstance(error, ValueError) and isinstance(error, TaskError)
    assert error.cause is cause and error.args == cause.args
    text = str(error)
    assert "train_step failed with ValueError: bad input 42" in text
    assert 'File "x"' in text


def test_task_error_keeps_user_attributes_and_constructor_arguments():
    error = TaskError.wrap(CustomFailure(7, "disk full"), "save", "tb")

    assert isinstance(error, CustomFailure)
    assert (error.code, error.detail) == (7, "disk full")
    assert error.args == (7, "disk full")


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("cause", [KeyError("k"), CustomFailure(3, "x"), OSError(2, "missing")],
                         ids=["KeyError", "custom", "OSError"])
def test_task_error_survives_pickling_with_its_dual_type(cause, dumps):
    error = TaskError.wrap(cause, "f", "remote traceback text")

    copy = pickle.loads(dumps(error))

    assert isinstance(copy, type(cause)) and isinstance(copy, TaskError)
    assert copy.remote_traceback == "remote traceback text"
    assert copy.function_name == "f"
    assert copy.args == cause.args
    assert str(copy) == str(error)


def test_task_error_of_a_task_error_is_not_wrapped_twice():
    inner = TaskError.wrap(ValueError("inner"), "child", "child traceback")

    outer = TaskError.wrap(inner, "parent", "parent traceback")

    assert outer is inner
    assert "child traceback" in str(outer)


def test_plain_task_error_without_cause_survives_pickling():
    error = TaskError("f", "traceback text")

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is TaskError
    assert str(copy) == str(error) == "f failed\n\nRemote traceback:\ntraceback text"


def test_picklable_cause_keeps_picklable_exceptions():
    cause = CustomFailure(1, "x")

    assert picklable_cause(cause) is cause


def test_picklable_cause_replaces_an_unpicklable_exception_with_its_message():
    stand_in = picklable_cause(Unpicklable("holding a lock"))

    assert isinstance(stand_in, EmberError)
    assert "Unpicklable" in str(stand_in) and "holding a lock" in str(stand_in)
    pickle.loads(pickle.dumps(stand_in))


def test_picklable_cause_keeps_exceptions_that_only_cloudpickle_can_ship():
    """A class defined in a function (or a script's ``__main__``) pickles only by value."""

    class LocalFailure(Exception):
        pass

    cause = LocalFailure("defined in a function")

    kept = picklable_cause(cause)

    assert type(kept) is LocalFailure
    assert str(kept) == "defined in a function"


# --- every public exception is in the tree -------------------------------------------------

PACKAGE = Path(ember.__file__).parent
# Exceptions of private modules that never leave ember's own code, and why that is so.
INTERNAL_EXCEPTIONS = {
    "ember.core._api.ActorExit": "raised by exit_actor() inside an actor's method; the worker "
                                 "ends the actor and callers see ActorDiedError",
    "ember.core.local._actor_host._PartialReturns": "a num_returns=n generator that failed early; "
                                                "the worker stores its items and the error",
    "ember.serve._adapter_params._Problems": "one adapter parameter's problems; the reader "
                                             "gathers them into one InvalidRequest (a 422)",
    "ember.serve._direct.FrameTooLarge": "serve's proxy-replica channel: the proxy answers the "
                                         "client itself",
    "ember.serve._direct.NotAuthenticated": "serve's proxy-replica channel: the proxy falls back "
                                            "to actor calls",
    "ember.serve._direct.ReplicaLost": "serve's proxy-replica channel: the proxy answers the "
                                       "client itself",
    "ember.train._trainer._DoNotRetry": "control flow inside fit(); it ends as "
                                        "TrainingFailedError",
}


def _module_names(path: Path = PACKAGE, prefix: str = "ember") -> list[str]:
    names = [prefix]
    for info in pkgutil.iter_modules([str(path)]):
        name = f"{prefix}.{info.name}"
        names += _module_names(path / info.name, name) if info.ispkg else [name]
    return names


def _is_public(module_name: str) -> bool:
    return not any(part.startswith("_") for part in module_name.split("."))


def _unless_extra_missing(load: Any, *args: Any) -> Any:
    """``load(*args)``, or None when it needs a package of an extra that is not installed
    (the other Pythons' fast subset installs no torch, transformers or gymnasium)."""
    try:
        return load(*args)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing == "ember" or importlib.util.find_spec(missing):
            raise
        return None


@functools.cache
def _exceptions() -> tuple[dict[type[BaseException], str], dict[type[BaseException], str]]:
    """Exception classes ember defines: (public: reachable from a public module's public names,
    by where; every one, by where it is defined)."""
    public: dict[type[BaseException], str] = {}
    defined: dict[type[BaseException], str] = {}
    for name in _module_names():
        module = _unless_extra_missing(importlib.import_module, name)
        if module is None:
            continue
        exported = getattr(module, "__all__", None)
        if exported is None:
            exported = [n for n in vars(module) if not n.startswith("_")]
        for attr, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, BaseException)
                    and value.__module__ == name):
                defined[value] = f"{name}.{attr}"
        if _is_public(name):
            for attr in exported:
                value = _unless_extra_missing(getattr, module, attr)
                if isinstance(value, type) and issubclass(value, BaseException):
                    public.setdefault(value, f"{name}.{attr}")
    return public, defined


def test_every_exception_reachable_from_a_public_module_is_an_ember_error():
    public, _ = _exceptions()
    outside = sorted(where for cls, where in public.items() if not issubclass(cls, EmberError))

    assert len(public) > len(ALL_ERRORS)  # the walk found the libraries' exceptions too
    assert outside == []


def test_every_public_exception_is_drawn_in_the_tree():
    public, _ = _exceptions()
    missing = sorted(where for cls, where in public.items()
                     if not re.search(rf"\b{cls.__name__}\b", errors.__doc__ or ""))

    assert missing == []


def test_exceptions_of_private_modules_are_ember_errors_or_stay_inside():
    _, defined = _exceptions()
    outside = {where for cls, where in defined.items() if not issubclass(cls, EmberError)}

    assert outside == set(INTERNAL_EXCEPTIONS)


def _library_error(name: str) -> BaseException:
    module, _, attr = name.rpartition(".")
    cls = getattr(importlib.import_module(module), attr)
    return cls(400, "bad field") if attr == "OpenAIError" else cls("bad field")


LIBRARY_ERRORS = [
    ("ember.data.StrictModeError", ValueError),
    ("ember.serve.DeploymentFailedError", RuntimeError),
    ("ember.serve.DeploymentUnavailableError", RuntimeError),
    ("ember.serve.BackPressureError", RuntimeError),
    ("ember.serve.llm.EngineOverloadedError", RuntimeError),
    ("ember.serve.llm.EngineClosedError", RuntimeError),
    ("ember.serve.llm.OpenAIError", Exception),
    ("ember.util.queue.Empty", queue.Empty),
    ("ember.util.queue.Full", queue.Full),
    ("ember.serve._app_file.ConfigError", ValueError),
]


@pytest.mark.parametrize(("name", "builtin"), LIBRARY_ERRORS, ids=[n for n, _ in LIBRARY_ERRORS])
def test_library_errors_are_ember_errors_and_keep_their_builtin_base(name, builtin):
    error = _library_error(name)

    with pytest.raises(EmberError):
        raise error
    with pytest.raises(builtin):  # the except clauses written before still catch it
        raise error
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
