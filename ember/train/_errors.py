"""Errors of ``ember.train``.

They belong in ``ember/errors.py`` (the one exception tree); they live here until that file
takes them, and derive from ``EmberError`` so ``except EmberError`` already catches them::

    EmberError
    ├── TrainingFailedError   the training run failed and used up FailureConfig.max_failures
    └── StorageError          the storage path cannot be read or written (also an ``OSError``)
"""

from __future__ import annotations

from ember.errors import EmberError


class TrainingFailedError(EmberError):
    """The run failed; the cause is chained (``__cause__``) and named in the message."""


class StorageError(EmberError, OSError):
    """A storage path could not be written or read; the message names the path and the cause."""
