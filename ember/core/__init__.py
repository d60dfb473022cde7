"""The core runtime: the API layer, the serialization and object-store plumbing, the backends.

Its modules are private. The names below are what the core shares with ember's other packages
(serve's proxy, the dashboard, ``ember.testing``, ``ember.util``): they import them from here,
never from ``ember.core``'s private modules (``tests/test_structure.py`` checks that).
"""

from ember.core._settings import (
    LOCAL_NODE_IP,
    SEGMENT_PREFIX,
    SHM_DIR,
    runtime_dir,
    serve_direct_enabled,
)

__all__ = ["LOCAL_NODE_IP", "SEGMENT_PREFIX", "SHM_DIR", "runtime_dir", "serve_direct_enabled"]
