"""PPO on CartPole-v1 written exactly as for Ray 2.5's RLlib, with ``ray`` changed to ``ember``.

Run it from the repository root::

    .venv/bin/python examples/rllib_2_5.py

Everything below the imports is Ray 2.5 code: an unchained config (each call changes the config
it is called on), 2.5's option names (``rollouts``, ``resources``, ``sgd_minibatch_size``,
``num_sgd_iter``, ``model``), 2.5's result keys, ``evaluate()``, a checkpoint saved, restored
with ``Algorithm.from_checkpoint`` and checked action by action. It trains 2 iterations of 400
steps (far from solving CartPole) in about 10-20 s on two CPU cores and prints::

    iter 1  episode_reward_mean   20.4  episodes_this_iter  19  timesteps_total    400  ...
    iter 2  episode_reward_mean   22.3  episodes_this_iter  16  timesteps_total    800  ...
    evaluation: episode_reward_mean 110.6 over 5 episodes
    saved to /tmp/ember-rllib-.../checkpoint
    restored: the same greedy actions on 20 observations: True
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

import ember
from ember.rllib.algorithms.algorithm import Algorithm
from ember.rllib.algorithms.ppo import PPOConfig


def main() -> None:
    ember.init(num_cpus=2)

    config = PPOConfig()
    config.environment("CartPole-v1")
    config.framework("torch")
    config.rollouts(num_rollout_workers=1, num_envs_per_worker=2)
    config.resources(num_gpus=0, num_learner_workers=1)
    config.training(lr=3e-4, gamma=0.99, lambda_=0.95, clip_param=0.2, vf_loss_coeff=0.5,
                    kl_coeff=0.2, train_batch_size=400, sgd_minibatch_size=100, num_sgd_iter=4,
                    model={"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"})
    config.evaluation(evaluation_duration=5, evaluation_config={"explore": False})
    config.debugging(seed=0)
    algo = config.build()

    for _ in range(2):
        result = algo.train()
        stats = result["info"]["learner"]["default_policy"]["learner_stats"]
        print(f"iter {result['training_iteration']}  "
              f"episode_reward_mean {result['episode_reward_mean']:6.1f}  "
              f"episodes_this_iter {result['episodes_this_iter']:3d}  "
              f"timesteps_total {result['timesteps_total']:6d}  "
              f"policy_loss {stats['policy_loss']:+.3f}  vf_loss {stats['vf_loss']:.3f}  "
              f"kl {stats['kl']:.4f}")

    evaluation = algo.evaluate()["evaluation"]
    print(f"evaluation: episode_reward_mean {evaluation['episode_reward_mean']:.1f} over "
          f"{evaluation['episodes_this_iter']} episodes")

    checkpoint = algo.save(os.path.join(tempfile.mkdtemp(prefix="ember-rllib-"), "checkpoint"))
    print(f"saved to {checkpoint}")
    observations = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    actions = [algo.compute_single_action(obs, explore=False) for obs in observations]
    algo.stop()

    restored = Algorithm.from_checkpoint(checkpoint)
    policy = restored.get_policy()
    same = [policy.compute_single_action(obs, explore=False)[0] for obs in observations]
    print(f"restored: the same greedy actions on {len(same)} observations: {same == actions}")
    restored.stop()
    ember.shutdown()


if __name__ == "__main__":
    main()
