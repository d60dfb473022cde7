"""``ember.rllib``: Ray 2.5's RLlib import paths over ``ember.rl``, so that RLlib code runs with
``ray`` changed to ``ember`` in its imports::

    from ember.rllib.algorithms.ppo import PPOConfig

    algo = (PPOConfig().environment("CartPole-v1")
            .rollouts(num_rollout_workers=2).training(sgd_minibatch_size=128).build())
    print(algo.train()["episode_reward_mean"])

The modules here only re-export ``ember.rl``'s classes (``PPO``, ``PPOConfig``, ``Algorithm``,
``AlgorithmConfig``, ``Policy``); what they accept of RLlib's API is documented there.
"""

from __future__ import annotations

__all__: list[str] = []
