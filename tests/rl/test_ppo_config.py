"""PPOConfig: a frozen builder whose checks name the bad setting."""

from __future__ import annotations

import dataclasses

import pytest

from ember.rl import PPOConfig


def test_builder_methods_return_new_configs_and_leave_the_old_one_alone():
    base = PPOConfig()
    config = (base.environment("CartPole-v1")
              .env_runners(3, num_envs_per_env_runner=2, rollout_fragment_length=50)
              .learners(2, learner_weights=[1, 3])
              .training(lr=1e-3, gamma=0.9, train_batch_size=600, minibatch_size=100))

    assert base.env is None and base.lr == 5e-5
    assert (config.env, config.num_env_runners, config.num_envs_per_env_runner) == \
        ("CartPole-v1", 3, 2)
    assert config.learner_weights == (1.0, 3.0) and config.weights() == (1.0, 3.0)
    assert (config.lr, config.gamma, config.train_batch_size) == (1e-3, 0.9, 600)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]


def test_auto_fragment_spreads_one_batch_over_every_sub_env():
    config = PPOConfig().env_runners(2, num_envs_per_env_runner=4).training(train_batch_size=1001)
    assert config.fragment_length() == 126  # ceil(1001 / 8)
    assert config.env_runners(rollout_fragment_length=10).fragment_length() == 10


def test_even_weights_by_default():
    assert PPOConfig().learners(3).weights() == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(("config", "message"), [
    (PPOConfig(), "no environment"),
    (PPOConfig(env="CartPole-v1", num_env_runners=0), "num_env_runners=0"),
    (PPOConfig(env="CartPole-v1").training(minibatch_size=500, train_batch_size=100),
     "minibatch_size=500"),
    (PPOConfig(env="CartPole-v1").learners(3, learner_weights=(1, 2)),
     "learner_weights has 2 entries but num_learners=3"),
    (PPOConfig(env="CartPole-v1").training(gamma=1.5), "gamma=1.5"),
    (PPOConfig(env="CartPole-v1", rollout_fragment_length="x"), "rollout_fragment_length"),
])
def test_validate_names_the_bad_setting(config, message):
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_bad_learner_weights_are_refused_when_set():
    with pytest.raises(ValueError, match=r"learner_weights\[1\]=0"):
        PPOConfig().learners(2, learner_weights=(1, 0))


def test_environment_must_be_an_id_or_a_callable():
    with pytest.raises(ValueError, match="gymnasium id"):
        PPOConfig().environment(42)  # type: ignore[arg-type]
