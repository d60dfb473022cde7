"""The learner group's data-parallel update equals one learner's, minibatch by minibatch.

Several minibatches per epoch and several epochs: each learner deals its shard out over the
minibatches (``minibatch_plan``); the group's all-reduced step on minibatch ``j`` must be one
learner's step on the union of the learners' parts, so after the whole update the group's
weights equal those of one learner stepping through the union minibatches in the same order.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ember
from ember.rl import PPOConfig
from ember.rl._learner import (
    Learner,
    learner_optimizer_state,
    learner_set_state,
    learner_update,
    learner_weights,
    minibatch_plan,
)
from ember.rl._shares import offsets, split_by_weights


@pytest.mark.parametrize("sizes", [[400], [200, 200], [100, 300], [0, 50], [3, 7, 11]])
@pytest.mark.parametrize("minibatch_size", [1, 64, 100, 1000])
def test_plan_covers_every_shard_once_per_epoch_in_proportional_minibatches(sizes,
                                                                            minibatch_size):
    plan = minibatch_plan(sizes, minibatch_size, num_epochs=3, seed=7)

    assert len(plan) == 3
    total = sum(sizes)
    expected = max(1, total // minibatch_size)
    for epoch in plan:
        assert len(epoch) == expected
        for rank, size in enumerate(sizes):
            taken = np.concatenate([parts[rank] for parts in epoch])
            assert sorted(taken.tolist()) == list(range(size))  # each sample exactly once
            for parts in epoch:  # a learner's part follows its share of the batch
                assert abs(len(parts[rank]) - size / expected) < 1
        lengths = [sum(len(p) for p in parts) for parts in epoch]
        assert max(lengths) - min(lengths) <= 1  # even minibatches ...
        assert min(lengths) >= min(minibatch_size, total)  # ... of at least minibatch_size
    # epochs are reshuffled; the same arguments give the same plan on every learner
    if sizes[-1] > 1:
        orders = [np.concatenate([parts[-1] for parts in epoch]) for epoch in plan]
        assert any(not np.array_equal(a, b) for a, b in itertools.pairwise(orders))
    again = minibatch_plan(sizes, minibatch_size, num_epochs=3, seed=7)
    for epoch_a, epoch_b in zip(plan, again, strict=True):
        for parts_a, parts_b in zip(epoch_a, epoch_b, strict=True):
            for a, b in zip(parts_a, parts_b, strict=True):
                np.testing.assert_array_equal(a, b)


def fixed_batch(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(size, 4)).astype(np.float32),
        "actions": rng.integers(0, 2, size),
        "logp": np.log(rng.uniform(0.3, 0.7, size)).astype(np.float32),
        "values": rng.normal(size=size).astype(np.float32),
        "advantages": rng.normal(size=size).astype(np.float32),
        "value_targets": rng.normal(size=size).astype(np.float32),
    }


def one_learner_through_the_union_minibatches(config, algo, start, batch, shares, seed):
    """The reference: one learner (no process group) stepping through minibatch ``j`` of each
    epoch as the concatenation of every learner's part of it."""
    import torch

    single = Learner(config, algo.observation_space, algo.action_space, start)
    data = {k: torch.tensor(v) for k, v in batch.items()}
    bounds = offsets(shares)
    steps = 0
    for epoch in minibatch_plan(shares, config.minibatch_size, config.num_epochs, seed):
        for parts in epoch:
            union = np.concatenate([lo + part for (lo, _), part in zip(bounds, parts,
                                                                       strict=True)])
            single._step(data, torch.as_tensor(union), 1.0)
            steps += 1
    return single.get_weights(), steps


@pytest.mark.slow
def test_learners_match_one_learner_over_several_minibatches_and_epochs(ember_local):
    # 400 samples, minibatches of 80: 5 steps per epoch, 3 epochs. Shares: even, uneven
    # (weights 1:3), and one that does not divide the minibatches evenly.
    config = (PPOConfig().environment("CartPole-v1").env_runners(1)
              .learners(2, learner_weights=(1, 3))
              .training(lr=1e-2, train_batch_size=400, minibatch_size=80, num_epochs=3,
                        grad_clip=0.5, entropy_coeff=0.01, vf_loss_coeff=0.5)
              .debugging(seed=5))
    batch = fixed_batch(400, seed=1)
    with config.build() as algo:
        start = algo.get_weights()
        fresh_optimizer = algo.learner_group.execute(learner_optimizer_state)[0]
        results = {}
        for shares in ([200, 200], split_by_weights(400, config.weights()), [37, 363]):
            algo.learner_group.execute(learner_set_state, start, fresh_optimizer)
            seed = sum(shares) + shares[0]
            refs = [algo.learner_group.execute_single_async(
                        rank, learner_update, {k: v[lo:hi] for k, v in batch.items()},
                        shares, seed)
                    for rank, (lo, hi) in enumerate(offsets(shares))]
            metrics = ember.get(refs)
            results[tuple(shares)] = (algo.learner_group.execute(learner_weights), metrics,
                                      seed)
        # and through PPO itself: the batch split 1:3, both learners ending equal
        shares, _ = algo._update_learners(batch)
        result = algo.train()
        after_train = algo.learner_group.execute(learner_weights)

    assert shares == [100, 300]
    assert result["learner_shares"] == [100, 300] and result["num_env_steps_sampled"] == 400
    for key, value in after_train[0].items():
        np.testing.assert_array_equal(after_train[1][key], value, err_msg=key)
    assert list(results) == [(200, 200), (100, 300), (37, 363)]
    for shares, (per_rank, metrics, seed) in results.items():
        expected, steps = one_learner_through_the_union_minibatches(
            config, algo, start, batch, list(shares), seed)
        assert steps == 15
        assert [m["num_samples"] for m in metrics] == list(shares)
        assert all(np.isfinite(m["policy_loss"]) for m in metrics)
        assert any(not np.allclose(start[k], expected[k], atol=1e-3) for k in start)
        for weights in per_rank:
            for key, value in expected.items():
                np.testing.assert_allclose(weights[key], value, rtol=1e-4, atol=1e-5,
                                           err_msg=f"{shares} {key}")
    # a different minibatch split is a different update: the comparison can tell them apart
    even, uneven = results[(200, 200)][0][0], results[(37, 363)][0][0]
    assert any(not np.allclose(even[k], uneven[k], rtol=1e-4, atol=1e-5) for k in even)
