"""What every algorithm shares: ``AlgorithmConfig`` (the base of its config) and ``Algorithm``
(checkpoints: ``save``, ``restore`` and ``from_checkpoint``), named as in RLlib.

A checkpoint is a directory holding one file, ``algorithm_state.pkl``: the algorithm's frozen
config plus whatever its ``_get_state`` returns. It is written to a temporary name and renamed,
so a crash mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import time
from typing import Any

CHECKPOINT_FILE = "algorithm_state.pkl"
OLD_CHECKPOINT_FILE = "ppo_state.pkl"  # what ember's PPO wrote before Algorithm (still read)
# Where a checkpoint goes when save() is not given a directory (RLlib's is ~/ray_results).
RESULTS_DIR = os.path.join("~", "ember_results")


class AlgorithmConfig:
    """The base class of algorithm configs (ember has one algorithm: ``PPOConfig``)."""

    @property
    def algo_class(self) -> type[Algorithm]:
        """The algorithm class this config builds."""
        raise NotImplementedError(f"{type(self).__name__} names no algorithm class")


class Algorithm:
    """The base class of running algorithms: checkpoints shared by all of them.

    ``Algorithm.from_checkpoint(path)`` builds whatever algorithm wrote ``path`` (as RLlib's
    does); a subclass's (``PPO.from_checkpoint``) also checks that it is one of its own.
    """

    config: AlgorithmConfig
    iteration: int

    # -- what each algorithm provides ----------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """End the algorithm's actors."""
        raise NotImplementedError

    def _default_checkpoint_dir(self) -> str:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        name = f"{type(self).__name__}_{stamp}_{os.getpid()}_{id(self):x}"
        return os.path.join(os.path.expanduser(RESULTS_DIR), name,
                            f"checkpoint_{self.iteration:06d}")

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, checkpoint_dir: str | os.PathLike[str] | None = None) -> str:
        """Write the config, weights, optimizer state and counters to the directory
        ``checkpoint_dir`` (made if missing) and return its path. Without one, a new
        ``~/ember_results/<Algorithm>_<time>_.../checkpoint_<iteration>`` directory is made (as
        RLlib's ``~/ray_results``)."""
        path = os.fspath(checkpoint_dir) if checkpoint_dir is not None \
            else self._default_checkpoint_dir()
        os.makedirs(path, exist_ok=True)
        state = {"config": self.config, **self._get_state()}
        import cloudpickle

        target = os.path.join(path, CHECKPOINT_FILE)
        with open(target + ".tmp", "wb") as file:
            cloudpickle.dump(state, file)
        os.replace(target + ".tmp", target)  # a crash mid-write leaves the old checkpoint
        return path

    def restore(self, checkpoint_path: str | os.PathLike[str]) -> None:
        """Load the weights, optimizer state and counters that ``save`` wrote into this
        running algorithm (its actors stay; its config does not change)."""
        self._set_state(read_checkpoint(checkpoint_path, type(self).__name__))

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str]) -> Any:
        """A new algorithm (new actors) built from the config in ``checkpoint`` that continues
        from its state."""
        state = read_checkpoint(checkpoint, cls.__name__)
        algo_class = state["config"].algo_class
        if not issubclass(algo_class, cls):
            raise TypeError(f"the checkpoint at {os.fspath(checkpoint)!r} is a "
                            f"{algo_class.__name__}'s, not a {cls.__name__}'s; load it with "
                            f"{algo_class.__name__}.from_checkpoint or Algorithm.from_checkpoint")
        algo = algo_class(state["config"])
        try:
            algo._set_state(state)
        except BaseException:
            algo.stop()
            raise
        return algo


def read_checkpoint(path: str | os.PathLike[str], kind: str = "Algorithm") -> dict[str, Any]:
    """The state that ``Algorithm.save`` wrote to the directory ``path``."""
    target = os.path.join(os.fspath(path), CHECKPOINT_FILE)
    if not os.path.exists(target):
        old = os.path.join(os.fspath(path), OLD_CHECKPOINT_FILE)
        if not os.path.exists(old):
            raise FileNotFoundError(f"no {kind} checkpoint at {target!r}; pass the directory "
                                    "that algo.save() returned")
        target = old
    import cloudpickle

    with open(target, "rb") as file:
        state: dict[str, Any] = cloudpickle.load(file)
    return state
