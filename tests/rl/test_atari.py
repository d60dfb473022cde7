"""Breakout through ale-py, gymnasium's AtariPreprocessing and the Nature CNN."""

from __future__ import annotations

import numpy as np
import pytest

from ember.rl import PPOConfig

try:
    import ale_py  # noqa: F401
    import cv2  # noqa: F401
except ImportError as exc:
    pytest.skip(f"Breakout needs ale-py and OpenCV ({exc}): pip install 'ale-py>=0.9' "
                "opencv-python-headless", allow_module_level=True)


def test_breakout_env_gives_stacked_84x84_gray_frames_and_clipped_rewards():
    from ember.rl._env_runner import make_env

    env = make_env("ALE/Breakout-v5", {"repeat_action_probability": 0.0})
    try:
        obs, _ = env.reset(seed=0)
        rewards = []
        for _ in range(300):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            rewards.append(reward)
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()

    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert obs.max() > 0  # a real screen, not a blank one
    assert set(rewards) <= {-1.0, 0.0, 1.0}


@pytest.mark.slow
def test_ppo_runs_on_breakout_with_the_nature_cnn(ember_local):
    config = (PPOConfig().environment("ALE/Breakout-v5")
              .env_runners(1, num_envs_per_env_runner=2)
              .learners(1)
              .training(lr=2.5e-4, train_batch_size=256, minibatch_size=64, num_epochs=2,
                        entropy_coeff=0.01, grad_clip=0.5)
              .debugging(seed=0))
    with config.build() as algo:
        results = [algo.train() for _ in range(3)]
        action = algo.compute_single_action(np.zeros((4, 84, 84), np.uint8))

    assert type(algo.model).__name__ == "NatureCNN"
    assert [r["training_iteration"] for r in results] == [1, 2, 3]
    assert [r["num_env_steps_sampled_lifetime"] for r in results] == [256, 512, 768]
    for result in results:
        for key in ("total_loss", "policy_loss", "vf_loss", "entropy"):
            assert np.isfinite(result[key]), (key, result[key])
    assert action in range(4)
