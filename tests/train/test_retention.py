"""Checkpoint retention: a pure policy, tested exhaustively without processes or storage."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ember.train._retention import CheckpointRecord, RetentionPolicy


def records(*scores: float | None, key: str = "acc") -> list[CheckpointRecord]:
    return [CheckpointRecord(i, {} if s is None else {key: s}) for i, s in enumerate(scores)]


def test_keep_everything_by_default():
    assert RetentionPolicy().to_delete(records(1, 2, 3)) == []


def test_without_score_keeps_the_newest():
    assert RetentionPolicy(num_to_keep=2).to_delete(records(5, 4, 3, 2)) == [0, 1]


def test_max_order_keeps_the_highest_and_the_newest():
    policy = RetentionPolicy(num_to_keep=2, score_attribute="acc", score_order="max")
    # best two are 0 (0.9) and 2 (0.8); 3 is the newest and stays for restarts
    assert policy.to_delete(records(0.9, 0.1, 0.8, 0.2)) == [1]
    assert [r.index for r in policy.to_keep(records(0.9, 0.1, 0.8, 0.2))] == [0, 2, 3]


def test_min_order_keeps_the_lowest():
    policy = RetentionPolicy(num_to_keep=1, score_attribute="loss", score_order="min")
    recs = records(3.0, 1.0, 2.0, 5.0, key="loss")
    assert policy.to_delete(recs) == [0, 2]
    assert [r.index for r in policy.ranked(recs)] == [1, 2, 0, 3]


def test_missing_or_bad_scores_rank_last_and_newest_is_kept():
    policy = RetentionPolicy(num_to_keep=1, score_attribute="acc")
    recs = [CheckpointRecord(0, {"acc": "high"}), CheckpointRecord(1, {"acc": 0.5}),
            CheckpointRecord(2, {"acc": math.nan}), CheckpointRecord(3, {}),
            CheckpointRecord(4, {"acc": True})]
    assert policy.to_delete(recs) == [0, 2, 3]  # keeps 1 (the only score) and 4 (the newest)


def test_ties_prefer_the_newer_checkpoint():
    policy = RetentionPolicy(num_to_keep=2, score_attribute="acc")
    assert policy.to_delete(records(0.5, 0.5, 0.5, 0.1)) == [0]


def test_nested_score_attribute():
    policy = RetentionPolicy(num_to_keep=1, score_attribute="eval/loss", score_order="min")
    recs = [CheckpointRecord(0, {"eval": {"loss": 1.0}}), CheckpointRecord(1, {"eval/loss": 0.5}),
            CheckpointRecord(2, {"eval": {"loss": 2.0}})]
    assert policy.to_delete(recs) == [0]


def test_empty_and_invalid_input():
    assert RetentionPolicy(num_to_keep=1).to_delete([]) == []
    with pytest.raises(ValueError, match="appears twice"):
        RetentionPolicy().to_delete([CheckpointRecord(1, {}), CheckpointRecord(1, {})])
    with pytest.raises(ValueError, match="num_to_keep"):
        RetentionPolicy(num_to_keep=0)
    with pytest.raises(ValueError, match="score_order"):
        RetentionPolicy(score_order="best")  # type: ignore[arg-type]


scores = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=False, width=32))


@given(st.lists(scores, max_size=12), st.integers(1, 6), st.sampled_from(["max", "min"]),
       st.booleans())
def test_properties(score_list, keep, order, use_score):
    recs = records(*score_list)
    policy = RetentionPolicy(keep, "acc" if use_score else None, order)
    deleted = policy.to_delete(recs)
    kept = {r.index for r in recs} - set(deleted)
    # the newest always survives; at most num_to_keep + 1 survive; deletion only when over budget
    if recs:
        assert len(recs) - 1 in kept
    assert len(kept) == min(len(recs), keep) or len(kept) == keep + 1
    assert deleted == sorted(deleted)
    # nothing deleted scores better than a kept one, except the newest kept only for restarts
    best = [r.index for r in policy.ranked(recs)][:keep]
    for i, j in itertools.product(deleted, best):
        assert policy._rank_key(recs[i]) <= policy._rank_key(recs[j])
