"""Helpers shared by the serve tests."""

from __future__ import annotations

import httpx

from ember import serve

TIMEOUT = httpx.Timeout(20.0)


def url(path: str = "/") -> str:
    """The running HTTP proxy's address for ``path``."""
    port = serve.status().http_port
    assert port
    return f"http://127.0.0.1:{port}{path}"
