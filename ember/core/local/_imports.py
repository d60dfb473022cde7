"""Imports under way in a worker's main thread, for a cancel that must not land inside one.

An exception that stops a module half-way through its import leaves its package without the
submodules it had loaded as attributes (``pandas`` gone from ``sys.modules``, ``pandas.core``
still there): every later import of it in that process then fails with "partially initialized
module". So a cancel signal that arrives during an import waits for the import's end and lands
at the next line of the code that imported (``after_import``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

_IMPORT_MACHINERY = frozenset(("<frozen importlib._bootstrap>",
                               "<frozen importlib._bootstrap_external>"))


def importer_of(frame: Any) -> Any:
    """The frame whose ``import`` is running at ``frame`` (the outermost one, when imports
    nest), or None when no import is under way."""
    importer = None
    while frame is not None:
        caller = frame.f_back
        if (frame.f_code.co_filename in _IMPORT_MACHINERY and caller is not None
                and caller.f_code.co_filename not in _IMPORT_MACHINERY):
            importer = caller
        frame = caller
    return importer


def after_import(importer: Any, act: Callable[[], None]) -> None:
    """Call ``act`` in ``importer`` once its import has returned (or raised), at its next
    line; what ``act`` raises is raised there. Uses this thread's trace hook, which must be
    free (``sys.gettrace() is None``); it is freed again at once."""

    def at_importer(frame: Any, event: str, arg: Any) -> None:
        sys.settrace(None)
        frame.f_trace = None
        act()

    importer.f_trace = at_importer
    importer.f_trace_lines = True
    sys.settrace(lambda frame, event, arg: None)  # tracing on; no other frame is traced
