"""The batch-splitting policy for learners of different speeds, and the gradient scale rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ember.rl._shares import deal, gradient_scales, offsets, split_by_weights

weights_strategy = st.lists(st.floats(min_value=0.01, max_value=100, allow_nan=False),
                            min_size=1, max_size=8)


def test_weights_one_and_three_take_a_quarter_and_three_quarters():
    assert split_by_weights(4000, [1, 3]) == [1000, 3000]


def test_equal_weights_split_evenly_and_ties_go_to_the_first():
    assert split_by_weights(10, [1, 1, 1]) == [4, 3, 3]
    assert split_by_weights(10, [1, 3]) == [3, 7]


@given(total=st.integers(min_value=0, max_value=100_000), weights=weights_strategy)
def test_shares_sum_to_the_batch_and_stay_within_one_of_the_quota(total, weights):
    shares = split_by_weights(total, weights)

    assert sum(shares) == total
    assert all(s >= 0 for s in shares)
    for share, weight in zip(shares, weights, strict=True):
        assert abs(share - total * weight / math.fsum(weights)) < 1


@given(total=st.integers(min_value=0, max_value=10_000), weights=weights_strategy)
def test_a_heavier_learner_never_gets_fewer_samples(total, weights):
    shares = split_by_weights(total, weights)
    for i in range(len(weights)):
        for j in range(len(weights)):
            if weights[i] > weights[j]:
                assert shares[i] >= shares[j]


def test_offsets_tile_the_batch():
    assert offsets([3, 0, 7]) == [(0, 3), (3, 3), (3, 10)]


@pytest.mark.parametrize("bad", [[], [1, 0], [1, -2], [float("nan")], [True], ["1"]])
def test_bad_weights_are_refused_with_the_fix(bad):
    with pytest.raises(ValueError, match="learner_weights"):
        split_by_weights(10, bad)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_bad_total_is_refused(bad):
    with pytest.raises(ValueError, match="total"):
        split_by_weights(bad, [1])


@given(sizes=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=6)
       .filter(lambda s: sum(s) > 0), seed=st.integers(0, 2**31 - 1))
def test_scaled_sum_of_shard_mean_gradients_is_the_full_batch_mean(sizes, seed):
    # Per-sample "gradients" g_j; each learner's gradient is the mean over its shard.
    per_sample = np.random.default_rng(seed).normal(size=(sum(sizes), 3))
    bounds = offsets(sizes)
    scales = gradient_scales(sizes)
    reduced = np.zeros(3)
    for (start, stop), scale in zip(bounds, scales, strict=True):
        if stop > start:
            reduced += scale * per_sample[start:stop].mean(axis=0)

    np.testing.assert_allclose(reduced, per_sample.mean(axis=0), rtol=1e-10, atol=1e-12)


def test_gradient_scales_refuse_an_empty_minibatch():
    with pytest.raises(ValueError, match="zero samples"):
        gradient_scales([0, 0])


@given(st.lists(st.integers(0, 500), min_size=1, max_size=6), st.integers(1, 40))
def test_dealing_shards_into_minibatches_keeps_shards_whole_and_minibatches_even(sizes, parts):
    counts = deal(sizes, parts)

    assert [sum(row) for row in counts] == sizes  # every sample of every shard, once
    for row, size in zip(counts, sizes, strict=True):  # each learner within one of its quota
        assert all(abs(c - size / parts) < 1 for c in row)
    columns = [sum(row[j] for row in counts) for j in range(parts)]
    assert max(columns) - min(columns) <= 1  # minibatches within one sample of each other
    if sum(sizes) >= parts:
        assert min(columns) >= 1


def test_deal_example_and_bad_arguments():
    assert deal([3, 7, 11], 4) == [[1, 1, 1, 0], [2, 2, 1, 2], [3, 2, 3, 3]]
    with pytest.raises(ValueError, match="num_parts=0"):
        deal([3], 0)
    with pytest.raises(ValueError, match=r"sizes \[-1\]"):
        deal([-1], 2)
