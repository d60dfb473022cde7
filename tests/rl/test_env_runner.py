"""The env runner, run in this process (it is a plain class; PPO makes it an actor)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from ember.rl import PPOConfig
from ember.rl._env_runner import EnvRunner
from ember.rl._models import build_model, get_weights


def constant_value_weights(config: PPOConfig, value: float) -> dict[str, np.ndarray]:
    env = gym.make("CartPole-v1")
    model = build_model(env.observation_space, env.action_space, config.hiddens)
    with torch.no_grad():
        model.vf[-1].weight.zero_()
        model.vf[-1].bias.fill_(value)
    return get_weights(model)


def test_batch_is_steps_times_envs_with_every_field():
    config = PPOConfig().environment("CartPole-v1").env_runners(num_envs_per_env_runner=3)
    runner = EnvRunner(config, 0, constant_value_weights(config, 0.0))

    batch = runner.sample(7)

    assert batch["obs"].shape == (21, 4)
    for key in ("actions", "logp", "values", "advantages", "value_targets"):
        assert batch[key].shape == (21,), key
    assert set(np.unique(batch["actions"])) <= {0, 1}
    assert np.all(batch["logp"] <= 0)
    runner.close()


def test_truncated_episodes_bootstrap_and_are_reported():
    # Episodes cut after 3 steps (a random CartPole policy survives longer), V == 2 everywhere:
    # a truncated step's target is r + gamma * V(final obs) = 1 + 0.5 * 2.
    config = (PPOConfig().environment("CartPole-v1", env_config={"max_episode_steps": 3})
              .env_runners(num_envs_per_env_runner=2).training(gamma=0.5, lambda_=1.0))
    runner = EnvRunner(config, 0, constant_value_weights(config, 2.0))

    batch = runner.sample(9)

    assert batch["episode_lengths"] == [3] * 6
    assert batch["episode_returns"] == [3.0] * 6
    targets = batch["value_targets"].reshape(9, 2)
    np.testing.assert_allclose(targets[2::3], 2.0)  # 1 + 0.5 * 2 at every truncation
    np.testing.assert_allclose(targets[1::3], 2.0)  # 1 + 0.5 * 2 (lambda = 1: the return)
    runner.close()


def test_episodes_continue_across_sample_calls():
    config = PPOConfig().environment("CartPole-v1", env_config={"max_episode_steps": 4})
    runner = EnvRunner(config, 0, constant_value_weights(config, 0.0))

    first = runner.sample(3)
    second = runner.sample(3)

    assert first["episode_lengths"] == [] and second["episode_lengths"] == [4]
    runner.close()


def test_a_callable_env_is_called_with_env_config():
    def make(max_episode_steps):
        return gym.make("CartPole-v1", max_episode_steps=max_episode_steps)

    config = PPOConfig().environment(make, env_config={"max_episode_steps": 2})
    runner = EnvRunner(config, 0, constant_value_weights(config, 0.0))
    assert runner.sample(4)["episode_lengths"] == [2, 2]
    runner.close()


def test_evaluate_plays_whole_episodes_or_steps_greedily_or_sampling():
    # A policy that always pushes left ends every CartPole episode within a dozen steps.
    config = PPOConfig().environment("CartPole-v1").debugging(seed=0)
    weights = constant_value_weights(config, 0.0)
    weights["pi.4.bias"] = np.array([5.0, -5.0], np.float32)  # logits favour action 0
    runner = EnvRunner(config, 0, weights)

    greedy = runner.evaluate(3, "episodes", explore=False)
    steps = runner.evaluate(25, "timesteps", explore=True)

    assert len(greedy["episode_returns"]) == 3
    assert greedy["episode_returns"] == [float(n) for n in greedy["episode_lengths"]]
    assert greedy["num_env_steps"] == sum(greedy["episode_lengths"])
    assert max(greedy["episode_lengths"]) < 20
    assert steps["num_env_steps"] == 25 and sum(steps["episode_lengths"]) <= 25
    runner.close()

