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
