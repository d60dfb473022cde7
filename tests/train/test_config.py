"""The frozen configs: validation messages and the Ray 2.5 spellings."""

from __future__ import annotations

import dataclasses

import pytest

from ember.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig


def test_ray_spellings_are_accepted():
    config = CheckpointConfig(_checkpoint_keep_all_ranks=False,
                              _checkpoint_upload_from_workers=False)
    assert config.keep_all_ranks is False and config.upload_from_workers is False
    assert config._checkpoint_keep_all_ranks is False
    assert CheckpointConfig().keep_all_ranks is True and CheckpointConfig().upload_from_workers


def test_conflicting_spellings_raise():
    with pytest.raises(ValueError, match="only one"):
        CheckpointConfig(keep_all_ranks=True, _checkpoint_keep_all_ranks=False)


def test_configs_are_frozen():
    for config in (CheckpointConfig(), FailureConfig(), RunConfig(), ScalingConfig()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.name = "x"  # type: ignore[misc, attr-defined]


@pytest.mark.parametrize(("make", "match"), [
    (lambda: ScalingConfig(num_workers=0), "num_workers=0"),
    (lambda: ScalingConfig(num_workers=1, resources_per_worker={"GPU": 1}), "use_gpu=True"),
    (lambda: CheckpointConfig(num_to_keep=0), "num_to_keep=0"),
    (lambda: CheckpointConfig(checkpoint_score_order="up"), "'max' or 'min'"),
    (lambda: CheckpointConfig(async_upload=True, upload_from_workers=False),
     "needs upload_from_workers=True"),
    (lambda: FailureConfig(max_failures=-2), "max_failures=-2"),
    (lambda: RunConfig(name="a/b"), "without '/'"),
])
def test_bad_values_name_themselves(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_scaling_resources():
    config = ScalingConfig(num_workers=2, use_gpu=True, resources_per_worker={"CPU": 4, "x": 1})
    assert (config.num_cpus_per_worker, config.num_gpus_per_worker) == (4, 1)
    assert config.custom_resources_per_worker == {"x": 1}
