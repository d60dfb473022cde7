"""A runtime_env applied to a worker process (environment variables, working directory,
``sys.path``), and put back after a task that asked for it."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ember.core import _runtime_env


def apply_env(plan: _runtime_env.LocalEnv | None) -> Callable[[], None]:
    """Apply a runtime_env to this process; returns what puts everything back. Modules that
    were imported meanwhile stay imported (as any import in a reused worker does)."""
    if plan is None:
        return lambda: None
    saved = {name: os.environ.get(name) for name in plan.env_vars}
    os.environ.update(plan.env_vars)
    previous_cwd = None
    if plan.cwd is not None:
        previous_cwd = os.getcwd()
        os.chdir(plan.cwd)
    sys.path[0:0] = plan.paths

    def restore() -> None:
        for path in plan.paths:
            if path in sys.path:
                sys.path.remove(path)
        if previous_cwd is not None:
            try:
                os.chdir(previous_cwd)
            except OSError:
                pass
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return restore
