"""Ray 2.5 RLlib code, with ``ray`` changed to ``ember`` in its imports, on the local backend:
unchained configs, 2.5's names and result keys, evaluation, checkpoints, policies."""

from __future__ import annotations

import dataclasses
import math
import os

import cloudpickle
import numpy as np
import pytest

from ember.rllib.algorithms.algorithm import Algorithm
from ember.rllib.algorithms.ppo import PPO, PPOConfig

OBSERVATIONS = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)


def tiny_2_5_config() -> PPOConfig:
    """Written as for Ray 2.5: one unchained call per line."""
    config = PPOConfig()
    config.environment("CartPole-v1")
    config.rollouts(num_rollout_workers=1, num_envs_per_worker=2)
    config.resources(num_gpus=0)
    config.training(lr=1e-3, train_batch_size=200, sgd_minibatch_size=100, num_sgd_iter=2,
                    kl_coeff=0.3, kl_target=0.01, model={"fcnet_hiddens": [16, 16]})
    config.debugging(seed=0)
    return config


def greedy_actions(algo) -> list[int]:
    return [algo.compute_single_action(obs, explore=False) for obs in OBSERVATIONS]


def test_an_unchained_2_5_config_trains_and_reports_2_5_result_keys(ember_local):
    config = tiny_2_5_config()
    algo = config.build()
    try:
        first = algo.train()
        second = algo.train()
        with pytest.raises(dataclasses.FrozenInstanceError):
            algo.config.training(lr=1.0)
        config.training(lr=0.5)  # the user's config stays theirs; the algorithm's is a copy
        assert algo.config.lr == 1e-3 and algo.config.num_envs_per_worker == 2
        assert algo.config.hiddens == (16, 16)
    finally:
        algo.stop()

    assert (first["training_iteration"], second["training_iteration"]) == (1, 2)
    assert (first["timesteps_total"], second["timesteps_total"]) == (200, 400)
    assert second["episodes_total"] == first["episodes_this_iter"] + second["episodes_this_iter"]
    assert first["episodes_this_iter"] >= 1  # a random CartPole episode lasts ~20 steps
    assert second["episode_reward_mean"] == second["episode_return_mean"] > 0
    assert second["episode_reward_min"] <= second["episode_reward_mean"] <= \
        second["episode_reward_max"]
    assert second["episode_len_mean"] == second["episode_reward_mean"]  # CartPole: 1 per step
    assert second["time_total_s"] >= first["time_total_s"] + second["time_this_iter_s"] * 0.99
    stats = second["info"]["learner"]["default_policy"]["learner_stats"]
    for key in ("policy_loss", "vf_loss", "entropy", "kl", "total_loss", "vf_explained_var"):
        assert math.isfinite(stats[key]), key
    assert stats["vf_loss"] == second["vf_loss"] > 0 and 0 < stats["entropy"] <= math.log(2)
    assert stats["cur_lr"] == 1e-3 and second["info"]["num_env_steps_sampled"] == 400
    # the KL penalty's weight starts at kl_coeff and adapts after each iteration, as RLlib's
    first_stats = first["info"]["learner"]["default_policy"]["learner_stats"]
    assert first_stats["cur_kl_coeff"] == 0.3
    assert stats["cur_kl_coeff"] in (0.15, 0.3 * 1.5)  # this tiny run: 0.15
    assert stats["kl"] == second["approx_kl"] >= 0
    assert second["num_env_steps_sampled_lifetime"] == 400  # ember's own keys stay


def test_2_5_names_train_exactly_as_embers_names(ember_local):
    ember_config = (PPOConfig().environment("CartPole-v1")
                    .env_runners(1, num_envs_per_env_runner=2).learners(1)
                    .training(lr=1e-3, train_batch_size=200, minibatch_size=100, num_epochs=2,
                              kl_coeff=0.3, hiddens=(16, 16))
                    .debugging(seed=0))
    weights = []
    for config in (tiny_2_5_config(), ember_config):
        with config.build() as algo:
            result = algo.train()
            weights.append(algo.get_weights())
            weights.append(result["episode_reward_mean"])

    ray_weights, ray_return, ember_weights, ember_return = weights
    assert ray_return == ember_return
    for key, value in ray_weights.items():
        np.testing.assert_array_equal(value, ember_weights[key], err_msg=key)


def test_save_restore_and_from_checkpoint_give_the_same_greedy_actions(ember_local, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # save() with no directory writes under ~
    with tiny_2_5_config().build() as algo:
        algo.train()
        path = algo.save()
        trained = greedy_actions(algo)
        kl_coeff = algo.kl_coeff
        assert kl_coeff == 0.15  # a tiny KL (lr 1e-3, 2 epochs) halved the configured 0.3
        trained_weights = algo.get_weights()

    assert isinstance(path, str) and os.path.isdir(path)
    assert path.startswith(str(tmp_path / "ember_results" / "PPO_"))
    assert path.endswith("checkpoint_000001")

    with Algorithm.from_checkpoint(path) as restored:
        assert isinstance(restored, PPO) and restored.iteration == 1
        assert restored.kl_coeff == kl_coeff  # the adapted weight, not the config's
        assert greedy_actions(restored) == trained
        policy = restored.get_policy()
        action, state, extra = policy.compute_single_action(OBSERVATIONS[0], explore=False)
        assert (action, state) == (trained[0], [])
        assert 0.5 <= extra["action_prob"] <= 1 and extra["action_dist_inputs"].shape == (2,)
        assert restored.train()["training_iteration"] == 2

    fresh = tiny_2_5_config().debugging(seed=1).build()  # other initial weights
    try:
        before = fresh.get_policy().get_weights()
        fresh.restore(path)
        assert greedy_actions(fresh) == trained
        assert fresh.iteration == 1
        fresh.get_policy().set_weights(before)  # reaches learners and runners too
        assert greedy_actions(fresh) != trained
        learned = fresh.train()
        assert learned["training_iteration"] == 2
        assert any(not np.array_equal(fresh.get_weights()[k], trained_weights[k])
                   for k in trained_weights)
    finally:
        fresh.stop()

    # a checkpoint of an older ember (its file name; a config without the newer fields)
    with open(os.path.join(path, "algorithm_state.pkl"), "rb") as file:
        state = cloudpickle.load(file)
    for newer in ("kl_coeff", "kl_target", "evaluation_interval", "_frozen"):
        del state["config"].__dict__[newer]
    del state["kl_coeff"], state["time_total_s"]
    os.remove(os.path.join(path, "algorithm_state.pkl"))
    with open(os.path.join(path, "ppo_state.pkl"), "wb") as file:
        cloudpickle.dump(state, file)
    with PPO.from_checkpoint(path) as old:
        assert greedy_actions(old) == trained
        assert old.config.kl_coeff == 0.0 and old.kl_coeff == 0.0 and old.time_total_s == 0.0


def test_evaluate_plays_episodes_and_train_attaches_it_at_the_interval(ember_local):
    config = tiny_2_5_config()
    config.evaluation(evaluation_interval=2, evaluation_duration=3, evaluation_num_workers=1,
                      evaluation_config={"explore": False})
    with config.build() as algo:
        first = algo.train()
        second = algo.train()
        on_demand = algo.evaluate()
    local = tiny_2_5_config().evaluation(evaluation_duration=2)
    with local.build() as algo:
        in_driver = algo.evaluate()["evaluation"]

    assert "evaluation" not in first
    for evaluation in (second["evaluation"], on_demand["evaluation"]):
        assert evaluation["episodes_this_iter"] == 3
        lengths = evaluation["hist_stats"]["episode_lengths"]
        assert evaluation["timesteps_this_iter"] == sum(lengths) > 0
        assert evaluation["episode_reward_mean"] == pytest.approx(np.mean(lengths))  # 1 a step
    assert in_driver["episodes_this_iter"] == 2 and in_driver["episode_reward_mean"] > 0
