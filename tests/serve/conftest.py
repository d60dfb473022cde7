"""A serve instance per test: the local runtime from ``ember_local`` plus ``serve.shutdown``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ember import serve


@pytest.fixture
def serve_instance(ember_local: dict[str, Any]) -> Iterator[None]:
    try:
        yield
    finally:
        serve.shutdown()
