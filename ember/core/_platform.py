"""Where the local backend can run, checked before any of its plumbing is imported.

The local backend is built on Linux: workers are forked from a fork server, objects live as
files in ``/dev/shm`` and are mapped zero-copy, and processes talk over Unix socket pairs with
peer credentials (``SO_PEERCRED``). Anywhere else ``ember.init()`` says so at once and names the
way that works there (the ray backend), instead of failing deep inside with an ``OSError``.
"""

from __future__ import annotations

import os
import sys

from ember.errors import UnsupportedPlatformError

SHM_DIR = "/dev/shm"


def local_backend_problem(platform: str, shm_dir: str = SHM_DIR) -> str | None:
    """Why the local backend cannot run here, or ``None`` when it can (pure: the platform and
    the shared-memory folder are passed in, so tests can ask about other machines)."""
    if not platform.startswith("linux"):
        return (
            f"ember's local backend runs on Linux only (it forks workers, keeps objects in "
            f"{shm_dir} and uses Linux socket credentials); this is {platform!r}. Use a Ray "
            "cluster instead: pip install 'ember-scale[ray]', then "
            "ember.init(backend='ray') (Ray starts a local instance when no address is given), "
            "or run the program under Linux (WSL2 on Windows, a Linux container or VM on macOS)"
        )
    if not os.path.isdir(shm_dir) or not os.access(shm_dir, os.W_OK | os.X_OK):
        return (
            f"ember's local backend keeps objects in {shm_dir}, which is missing or not writable "
            "here; mount a tmpfs there (docker: --shm-size=2g, or --ipc=host), or use "
            "ember.init(backend='ray')"
        )
    return None


def check_local_backend_supported() -> None:
    """Raise ``UnsupportedPlatformError`` when the local backend cannot run on this machine."""
    problem = local_backend_problem(sys.platform)
    if problem is not None:
        raise UnsupportedPlatformError(problem)
