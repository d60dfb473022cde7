"""``ember.rl``: PPO with env runner actors and a data-parallel learner group.

::

    from ember.rl import PPOConfig

    config = (PPOConfig().environment("CartPole-v1")
              .env_runners(num_env_runners=2, num_envs_per_env_runner=4)
              .learners(num_learners=2, learner_weights=(1, 3))
              .training(lr=3e-4, train_batch_size=2000, minibatch_size=250, num_epochs=10))
    with config.build() as algo:
        for _ in range(20):
            print(algo.train()["episode_return_mean"])
        algo.save("/tmp/ppo")

Code written for Ray 2.5's RLlib runs with its imports pointed at ``ember.rllib``
(``from ember.rllib.algorithms.ppo import PPOConfig``): ``PPOConfig`` takes 2.5's names too
(``rollouts``, ``resources``, ``sgd_minibatch_size``, ``num_sgd_iter``, ``model=``...) and
``train()`` returns 2.5's result keys beside ember's.

Importing this package loads neither torch nor gymnasium: ``PPO`` loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ember.rl._algorithm import Algorithm, AlgorithmConfig
from ember.rl._ppo_config import PPOConfig

if TYPE_CHECKING:
    from ember.rl._policy import Policy
    from ember.rl._ppo import PPO

__all__ = ["PPO", "Algorithm", "AlgorithmConfig", "PPOConfig", "Policy"]

_LAZY = {"PPO": "ember.rl._ppo", "Policy": "ember.rl._policy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember.rl' has no attribute {name!r}")
