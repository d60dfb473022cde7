"""The exception tree of ``ember/errors.py``: relations, messages, and pickling."""

from __future__ import annotations

import pickle
import threading

import cloudpickle
import pytest

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
