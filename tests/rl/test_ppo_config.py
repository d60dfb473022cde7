"""PPOConfig: a frozen builder whose checks name the bad setting."""

from __future__ import annotations

import dataclasses

import pytest

from ember.rl import PPOConfig


def test_builder_methods_change_the_config_they_are_called_on_and_return_it():
    # As RLlib's: unchained calls take effect, chained ones return the same config.
    config = PPOConfig()
    config.environment("CartPole-v1")
    config.env_runners(3, num_envs_per_env_runner=2, rollout_fragment_length=50)
    same = config.learners(2, learner_weights=[1, 3]).training(lr=1e-3, gamma=0.9,
                                                               train_batch_size=600)
    config.training(minibatch_size=100)

    assert same is config
    assert (config.env, config.num_env_runners, config.num_envs_per_env_runner) == \
        ("CartPole-v1", 3, 2)
    assert config.learner_weights == (1.0, 3.0) and config.weights() == (1.0, 3.0)
    assert (config.lr, config.gamma, config.train_batch_size, config.minibatch_size) == \
        (1e-3, 0.9, 600, 100)
    config.validate()


def test_copy_is_independent_and_a_frozen_config_refuses_changes():
    config = PPOConfig().environment("CartPole-v1", env_config={"a": 1})
    duplicate = config.copy()
    duplicate.training(lr=1.0).environment(env_config={"b": 2})
    assert config.lr == 5e-5 and config.env_config == {"a": 1}
    assert duplicate.env_config == {"a": 1, "b": 2}  # env_config updates, as RLlib's

    config.freeze()
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"frozen.*copy_frozen=False"):
        config.training(lr=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    assert config.lr == 5e-5 and config.is_frozen
    assert config.copy().is_frozen and not config.copy(copy_frozen=False).is_frozen
    assert not duplicate.is_frozen and duplicate.copy(copy_frozen=True).is_frozen


def test_ray_2_5_names_set_the_same_settings_as_embers():
    ray_2_5 = (PPOConfig().environment("CartPole-v1").framework("torch")
               .rollouts(num_rollout_workers=3, num_envs_per_worker=2,
                         rollout_fragment_length=50, batch_mode="truncate_episodes")
               .resources(num_learner_workers=2, num_gpus_per_learner_worker=0.5,
                          num_cpus_per_learner_worker=2, num_cpus_per_worker=0.5)
               .training(lr=1e-3, lambda_=0.9, sgd_minibatch_size=64, num_sgd_iter=7,
                         vf_clip_param=10.0, kl_coeff=0.0, kl_target=0.02,
                         model={"fcnet_hiddens": [32, 16], "fcnet_activation": "tanh",
                                "vf_share_layers": False})
               .evaluation(evaluation_interval=2, evaluation_duration=4,
                           evaluation_num_workers=1, evaluation_config={"explore": False})
               .reporting(metrics_num_episodes_for_smoothing=20)
               .debugging(seed=3, log_level="INFO"))
    ember_names = (PPOConfig().environment("CartPole-v1")
                   .env_runners(3, num_envs_per_env_runner=2, rollout_fragment_length=50,
                                num_cpus_per_env_runner=0.5)
                   .learners(2, num_gpus_per_learner=0.5, num_cpus_per_learner=2)
                   .training(lr=1e-3, lambda_=0.9, minibatch_size=64, num_epochs=7,
                             vf_clip_param=10.0, kl_target=0.02, hiddens=(32, 16)))
    ember_names.evaluation(evaluation_interval=2, evaluation_duration=4,
                           evaluation_num_env_runners=1, evaluation_config={"explore": False})
    ember_names.reporting(metrics_num_episodes_for_smoothing=20).debugging(seed=3,
                                                                          log_level="INFO")

    assert ray_2_5 == ember_names
    assert (ray_2_5.num_rollout_workers, ray_2_5.num_envs_per_worker, ray_2_5.sgd_minibatch_size,
            ray_2_5.num_sgd_iter, ray_2_5.num_learner_workers) == (3, 2, 64, 7, 2)
    assert ray_2_5.model["fcnet_hiddens"] == [32, 16] and ray_2_5.framework_str == "torch"


def test_ray_2_5_zero_workers_and_num_gpus_map_onto_actors():
    # 2.5's 0 meant "in the driver"; ember samples and learns in actors, so 0 gives one.
    config = PPOConfig().rollouts(num_rollout_workers=0).resources(num_learner_workers=0)
    assert (config.num_env_runners, config.num_learners) == (1, 1)
    assert PPOConfig().resources(num_gpus=0.5).num_gpus_per_learner == 0.5
    two = PPOConfig().resources(num_gpus=2)
    assert (two.num_learners, two.num_gpus_per_learner) == (2, 1)


def test_to_dict_writes_ray_2_5_names_and_from_dict_reads_them_back():
    config = (PPOConfig().environment("CartPole-v1", env_config={"max_episode_steps": 50})
              .rollouts(num_rollout_workers=2).training(lambda_=0.8, sgd_minibatch_size=32,
                                                        num_sgd_iter=3,
                                                        model={"fcnet_hiddens": [8]}))
    settings = config.to_dict()

    assert settings["lambda"] == 0.8 and settings["num_workers"] == 2
    assert (settings["sgd_minibatch_size"], settings["num_sgd_iter"]) == (32, 3)
    assert settings["model"]["fcnet_hiddens"] == [8] and settings["framework"] == "torch"
    assert PPOConfig.from_dict(settings) == config
    legacy = PPOConfig.from_dict({"env": "CartPole-v1", "num_workers": 1, "lambda": 0.5,
                                  "batch_mode": "truncate_episodes"})
    assert (legacy.num_env_runners, legacy.lambda_) == (1, 0.5)
    with pytest.raises(ValueError, match="'num_workers' and 'num_env_runners' both set"):
        PPOConfig.from_dict({"num_workers": 1, "num_env_runners": 2})
    with pytest.raises(ValueError, match="unknown setting 'lr_typo'"):
        PPOConfig.from_dict({"lr_typo": 1.0})


@pytest.mark.parametrize(("call", "message"), [
    (lambda c: c.framework("tf2"), r"framework='tf2' is not supported.*framework\('torch'\)"),
    (lambda c: c.training(use_gae=False), r"use_gae=False.*lambda_=1.0"),
    (lambda c: c.rollouts(batch_mode="complete_episodes"), r"batch_mode='complete_episodes'"),
    (lambda c: c.training(model={"fcnet_activation": "relu"}),
     r"model\['fcnet_activation'\]='relu' is not supported.*'tanh'"),
    (lambda c: c.training(model={"custom_model": "mine"}), r"model\['custom_model'\]"),
    (lambda c: c.resources(num_gpus_per_worker=1), r"num_gpus_per_learner_worker"),
    (lambda c: c.evaluation(evaluation_config={"env_config": {}}), r"\['env_config'\]"),
    (lambda c: c.training(num_sgd_iter=3, num_epochs=4), r"num_epochs=4 and num_sgd_iter=3"),
    (lambda c: c.debugging(log_level="LOUD"), r"log_level='LOUD'"),
])
def test_ray_2_5_options_ember_lacks_are_refused_naming_the_alternative(call, message):
    with pytest.raises(ValueError, match=message):
        call(PPOConfig())


def test_harmless_ray_2_5_options_are_accepted_and_a_misspelt_one_is_not():
    config = (PPOConfig().rollouts(create_env_on_local_worker=True, enable_connectors=True)
              .resources(num_cpus_for_local_worker=1, placement_strategy="SPREAD")
              .training(kl_coeff=0.0, grad_clip_by="global_norm")
              .reporting(keep_per_episode_custom_metrics=True,
                         min_sample_timesteps_per_iteration=0)
              .environment(disable_env_checking=True))
    assert config == PPOConfig()
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_rollout_worker'"):
        PPOConfig().rollouts(num_rollout_worker=2)


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
