"""The core's layers: the neutral API (``_refs``, ``_remote``, ``_api``) stands apart from the
local backend's plumbing, so that importing it (as ``import ember`` and the ray backend do)
loads no shared-memory or scheduler code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PLUMBING = ("ember.core.local", "ember.core._shm", "ember.core._serialization")


@pytest.mark.parametrize("statement", [
    "import ember.core._refs, ember.core._remote, ember.core._api",
    "import ember, ember.actor, ember.exceptions",
])
def test_the_neutral_api_imports_no_local_plumbing(statement: str) -> None:
    code = (f"{statement}; import sys, json; "
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({PLUMBING!r}))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


# The local scheduler's modules (records and decisions) and what would make them impure.
SCHEDULER = ("_scheduler", "_actors", "_requests", "_streams", "_records")
IMPURE = ("socket", "select", "selectors", "threading", "time", "os", "signal", "subprocess",
          "asyncio", "multiprocessing", "ember.core._shm", "ember.core.local._io",
          "ember.core.local._driver", "ember.core.local._transport",
          "ember.core.local._forkserver", "ember.core.local._worker")


@pytest.mark.parametrize("module", SCHEDULER)
def test_the_local_scheduler_imports_no_sockets_threads_clocks_or_processes(module: str) -> None:
    import ast
    from pathlib import Path

    import ember.core.local

    source = Path(ember.core.local.__file__).with_name(f"{module}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)

    assert sorted(imported & set(IMPURE)) == []
