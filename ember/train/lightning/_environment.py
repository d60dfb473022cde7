"""``EmberEnvironment``: Lightning's view of an ember worker group (imports lightning)."""

from __future__ import annotations

import os

from lightning.fabric.plugins.environments import ClusterEnvironment

from ember.train._session import get_context


class EmberEnvironment(ClusterEnvironment):
    """A Lightning ``ClusterEnvironment`` whose processes ember created: ranks and world size
    come from ``ember.train.get_context()``, and the main address from the process group ember
    set up. Lightning never launches processes of its own under it.

    (Lightning's default ``LightningEnvironment`` believes it must launch the other processes
    unless ``LOCAL_RANK`` is set, and then takes the world size from ``Trainer(devices=...,
    num_nodes=...)``, not from the gang it runs in.)
    """

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return os.environ.get("MASTER_ADDR", "127.0.0.1")

    @property
    def main_port(self) -> int:
        return int(os.environ.get("MASTER_PORT", "0"))

    @staticmethod
    def detect() -> bool:
        from ember.train import _session

        return _session._session is not None

    def world_size(self) -> int:
        return get_context().world_size

    def set_world_size(self, size: int) -> None:
        """Ignored: ember's worker group fixed the world size (not Lightning's devices x nodes)."""
        pass  # ember's worker group fixed it; Lightning's guess (devices x nodes) is ignored

    def global_rank(self) -> int:
        return get_context().world_rank

    def set_global_rank(self, rank: int) -> None:
        """Ignored: ember's worker group fixed each worker's rank."""
        pass  # as for set_world_size

    def local_rank(self) -> int:
        return get_context().local_rank

    def node_rank(self) -> int:
        return get_context().node_rank
