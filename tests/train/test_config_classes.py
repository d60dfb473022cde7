"""The frozen configs: validation messages and the Ray 2.5 spellings."""

from __future__ import annotations

import dataclasses

import pytest

from ember.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig


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


def test_failure_config_takes_rays_fields():
    config = FailureConfig(max_failures=0, fail_fast=True, controller_failure_limit=2,
                           max_preemption_failures=3, relax_collectives_on_preemption=True,
                           preemption_grace_s=5.0)
    assert (config.max_failures, config.fail_fast, config.max_preemption_failures) == (0, True, 3)
    assert FailureConfig(fail_fast="RAISE").raises_original_error
    assert not FailureConfig(fail_fast=True).raises_original_error
    assert FailureConfig().storage_timeout_s == 60


@pytest.mark.parametrize(("make", "match"), [
    (lambda: FailureConfig(max_failures=2, fail_fast=True), "needs max_failures=0"),
    (lambda: FailureConfig(fail_fast="sometimes"), "True, False or 'raise'"),
    (lambda: FailureConfig(max_preemption_failures=-3), "max_preemption_failures=-3"),
    (lambda: FailureConfig(storage_timeout_s=-1), "storage_timeout_s=-1"),
    (lambda: DataConfig(datasets_to_split="some"), "'all' or a list"),
])
def test_bad_failure_and_data_configs_name_themselves(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_data_config_says_which_datasets_are_split():
    assert DataConfig().splits("anything")
    config = DataConfig(datasets_to_split=("train",))
    assert config.datasets_to_split == ["train"]
    assert config.splits("train") and not config.splits("val")
    with pytest.raises(TypeError, match="list of dataset names"):
        DataConfig(datasets_to_split=[1])


def test_trainer_refuses_a_data_config_naming_an_unknown_dataset():
    from ember.train import TorchTrainer

    with pytest.raises(ValueError, match=r"names 'tain'.*datasets: 'train'"):
        TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=1),
                     datasets={"train": [1, 2]},
                     dataset_config=DataConfig(datasets_to_split=["tain"]))


def test_checkpoints_are_verified_unless_turned_off():
    assert CheckpointConfig().verify_checksums is True
    assert CheckpointConfig(verify_checksums=False).verify_checksums is False
