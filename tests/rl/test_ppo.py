"""PPO end to end on the local backend: learner shares, checkpoints, and learning CartPole."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import ember
from ember.rl import PPO, PPOConfig
from ember.rl._learner import learner_weights


def test_save_and_from_checkpoint_continue_with_the_same_policy(ember_local, tmp_path):
    config = (PPOConfig().environment("CartPole-v1").env_runners(1).learners(1)
              .training(train_batch_size=200, minibatch_size=100, num_epochs=2, lr=1e-3)
              .debugging(seed=0))
    observations = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with config.build() as algo:
        first = algo.train()
        algo.save(tmp_path / "ckpt")
        weights = algo.get_weights()
        actions = [algo.compute_single_action(obs) for obs in observations]

    with PPO.from_checkpoint(tmp_path / "ckpt") as restored:
        for key, value in weights.items():
            np.testing.assert_array_equal(restored.get_weights()[key], value)
        assert [restored.compute_single_action(obs) for obs in observations] == actions
        assert restored.compute_single_action(observations[0], explore=True) in (0, 1)
        second = restored.train()

    assert first["training_iteration"] == 1 and second["training_iteration"] == 2
    assert second["num_env_steps_sampled_lifetime"] == 2 * first["num_env_steps_sampled"]
    for key in ("policy_loss", "vf_loss", "entropy", "total_loss", "sample_time_s",
                "learn_time_s", "num_env_steps_sampled_per_s"):
        assert np.isfinite(second[key]), key


def test_from_checkpoint_without_one_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="no PPO checkpoint"):
        PPO.from_checkpoint(tmp_path)


def test_a_learner_too_slow_for_any_sample_still_joins_and_a_stopped_algo_refuses(ember_local):
    # Weights (1, 1000) over 50 samples: the first learner's share rounds to zero; it still
    # takes part in every all-reduce (with a zero gradient) so the group does not hang.
    config = (PPOConfig().environment("CartPole-v1").env_runners(1)
              .learners(2, learner_weights=(1, 1000))
              .training(train_batch_size=50, minibatch_size=25, num_epochs=2))
    algo = config.build()
    before = algo.get_weights()
    result = algo.train()
    per_rank = algo.learner_group.execute(learner_weights)

    assert result["learner_shares"] == [0, 50] and np.isfinite(result["total_loss"])
    assert any(not np.array_equal(before[k], per_rank[0][k]) for k in before)
    for key, value in per_rank[1].items():
        np.testing.assert_array_equal(per_rank[0][key], value)
    algo.stop()
    algo.stop()  # twice is fine
    with pytest.raises(RuntimeError, match="stopped"):
        algo.train()


def test_a_killed_env_runner_is_replaced_and_training_goes_on(ember_local):
    config = (PPOConfig().environment("CartPole-v1").env_runners(2)
              .learners(1).training(train_batch_size=200, minibatch_size=100, num_epochs=1,
                                    lr=1e-2).debugging(seed=0))
    with config.build() as algo:
        first = algo.train()
        victim = algo.runners[0]
        old_pid = ember.get(victim.pid.remote())
        os.kill(old_pid, signal.SIGKILL)

        second = algo.train()
        third = algo.train()
        new_pid = ember.get(algo.runners[0].pid.remote())
        runner_weights = ember.get(algo.runners[0].get_weights.remote())
        current = algo.get_weights()

    assert first["num_env_runner_restarts"] == 0
    assert second["num_env_runner_restarts"] == third["num_env_runner_restarts"] == 1
    assert algo.runners == [] and new_pid != old_pid
    assert [r["training_iteration"] for r in (first, second, third)] == [1, 2, 3]
    assert second["num_env_steps_sampled"] >= 200 and third["num_env_steps_sampled"] >= 200
    assert third["num_env_steps_sampled_lifetime"] == sum(
        r["num_env_steps_sampled"] for r in (first, second, third))
    assert np.isfinite(second["total_loss"]) and np.isfinite(third["total_loss"])
    for key, value in current.items():  # the replacement acts with the newest policy
        np.testing.assert_array_equal(runner_weights[key], value, err_msg=key)


def _env_that_kills_its_runner(driver_pid):
    import gymnasium as gym

    if os.getpid() != driver_pid:  # the driver's probe env is fine; every runner dies
        os.kill(os.getpid(), signal.SIGKILL)
    return gym.make("CartPole-v1")


@pytest.mark.slow
def test_runners_that_keep_dying_stop_training_with_an_error_instead_of_looping(ember_local):
    config = (PPOConfig().environment(_env_that_kills_its_runner,
                                      env_config={"driver_pid": os.getpid()})
              .env_runners(1).learners(1).training(train_batch_size=50, minibatch_size=50))
    with config.build() as algo, pytest.raises(RuntimeError, match="died 11 times"):
        algo.train()


@pytest.mark.slow
def test_ppo_learns_cartpole_with_two_env_runners_and_two_learners(ember_local):
    config = (PPOConfig().environment("CartPole-v1")
              .env_runners(2, num_envs_per_env_runner=4)
              .learners(2)
              .training(lr=3e-4, train_batch_size=2000, minibatch_size=250, num_epochs=10,
                        vf_loss_coeff=0.5, grad_clip=0.5)
              .debugging(seed=0))
    curve = []
    with config.build() as algo:
        for _ in range(30):
            result = algo.train()
            curve.append(round(result["episode_return_mean"], 1))
            if result["episode_return_mean"] >= 150:
                break

    print("episode_return_mean by iteration:", curve)
    assert curve[-1] >= 150, curve
    assert ember.is_initialized()


def test_ppo_trains_the_nature_cnn_on_preprocessed_image_frames(ember_local):
    # Breakout needs ale-py and its ROMs; this synthetic RGB env goes through the same
    # preprocessing (skip + max, 84x84 gray, 4-frame stack) into the Nature CNN.
    def make_image_env():
        import gymnasium as gym

        from ember.rl._atari import wrap_image_env

        class Blink(gym.Env):
            observation_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
            action_space = gym.spaces.Discrete(4)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                self.t = 0
                return np.zeros((210, 160, 3), np.uint8), {}

            def step(self, action):
                self.t += 1
                frame = np.full((210, 160, 3), 40 * (self.t % 5), np.uint8)
                return frame, float(action == 1), False, self.t >= 40, {}

        return wrap_image_env(Blink())

    config = (PPOConfig().environment(make_image_env).env_runners(1).learners(1)
              .training(train_batch_size=64, minibatch_size=32, num_epochs=1))
    with config.build() as algo:
        result = algo.train()
        action = algo.compute_single_action(np.zeros((4, 84, 84), np.uint8))

    assert type(algo.model).__name__ == "NatureCNN"
    assert result["num_env_steps_sampled"] == 64 and np.isfinite(result["total_loss"])
    assert action in range(4)


def test_asking_for_gpus_the_cluster_lacks_fails_at_build_naming_the_shortfall(ember_local):
    config = (PPOConfig().environment("CartPole-v1").env_runners(1)
              .learners(1, num_gpus_per_learner=1))
    with pytest.raises(ember.errors.ResourceError,
                       match=r"GPU: 1 per member, and the nodes have 0"):
        config.build()
    assert ember.available_resources().get("CPU") == 2  # nothing kept holding resources
