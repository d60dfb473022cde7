"""Pin the public names: adding or removing one is a decision, made here on purpose."""

from __future__ import annotations

import contextlib
import io
from importlib.metadata import version

import pytest

import ember
from ember import errors
from ember.cli import main

EMBER_ALL = [
    "ActorClass",
    "ActorHandle",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "RuntimeContext",
    "available_resources",
    "cancel",
    "cluster_resources",
    "errors",
    "get",
    "get_actor",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "put",
    "remote",
    "shutdown",
    "wait",
]

ERRORS_ALL = [
    "ActorDiedError",
    "ActorUnavailableError",
    "BackendError",
    "EmberError",
    "GetTimeoutError",
    "ObjectLostError",
    "OutOfMemoryError",
    "ResourceError",
    "RuntimeNotInitializedError",
    "SerializationError",
    "StorageError",
    "TaskCancelledError",
    "TaskError",
    "TrainingFailedError",
    "UnsupportedPlatformError",
    "WorkerCrashedError",
]


def test_ember_all_is_pinned():
    assert ember.__all__ == EMBER_ALL


def test_errors_all_is_pinned():
    assert errors.__all__ == ERRORS_ALL


@pytest.mark.parametrize(("module", "name"),
                         [(ember, n) for n in EMBER_ALL] + [(errors, n) for n in ERRORS_ALL])
def test_every_exported_name_exists(module, name):
    assert getattr(module, name) is not None


def test_every_error_class_is_exported():
    defined = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, BaseException)
               and value.__module__ == errors.__name__}
    assert defined == set(ERRORS_ALL)


def test_version_is_a_string():
    assert isinstance(ember.__version__, str) and ember.__version__


def test_the_version_has_one_source():
    """``ember.__version__``, ``ember --version`` and the installed distribution agree."""
    assert version("ember-scale") == ember.__version__
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--version"]) == 0
    assert out.getvalue().strip() == f"ember {ember.__version__}"


def test_unknown_attribute_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no_such_thing"):
        ember.no_such_thing  # noqa: B018
