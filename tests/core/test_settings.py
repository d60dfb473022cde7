"""``ember/core/_settings.py``: the local backend's settings, resolved once at ``init``."""

from __future__ import annotations

import pytest

from ember.core._settings import resolve_local_config


def resolve(**overrides):
    options = {"num_cpus": None, "num_gpus": None, "resources": None,
               "object_store_memory": None, "namespace": None, **overrides}
    return resolve_local_config(**options)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "EMBER_OBJECT_STORE_MEMORY", "EMBER_SPILL_DIR",
                 "EMBER_INLINE_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)


def test_num_gpus_beyond_the_detected_ones_makes_fake_ids(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")

    assert resolve(num_gpus=2).gpu_ids == ("0", "1")


def test_cuda_visible_devices_limits_and_names_the_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")

    assert resolve().gpu_ids == ("3", "5", "7")
    assert resolve(num_gpus=2).gpu_ids == ("3", "5")
    assert resolve(num_gpus=0).gpu_ids == ()


def test_gpu_ids_are_distinct_when_more_are_asked_than_visible(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")

    ids = resolve(num_gpus=4).gpu_ids

    assert len(ids) == 4 and len(set(ids)) == 4
    assert ids[:2] == ("3", "5")


def test_cuda_visible_devices_minus_one_means_no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")

    assert resolve().gpu_ids == ()


def test_num_cpus_defaults_to_the_machine_and_is_a_float():
    import os

    config = resolve()

    assert config.num_cpus == float(os.cpu_count() or 1)
    assert resolve(num_cpus=3).num_cpus == 3.0


def test_object_store_memory_comes_from_the_argument_then_the_environment(monkeypatch):
    assert resolve(object_store_memory=1234).object_store_memory == 1234
    monkeypatch.setenv("EMBER_OBJECT_STORE_MEMORY", "5678")
    assert resolve().object_store_memory == 5678
    assert resolve(object_store_memory=1234).object_store_memory == 1234


def test_default_object_store_is_a_positive_share_of_memory():
    assert resolve().object_store_memory > 0


def test_the_memory_resource_is_the_rest_of_the_memory_unless_given():
    default = resolve(object_store_memory=2**30)
    assert default.memory > 0
    assert default.memory + 2**30 == resolve(object_store_memory=2**31).memory + 2**31
    assert resolve(memory=5 * 2**30).memory == 5 * 2**30
    with pytest.raises(ValueError, match="_memory"):
        resolve(memory=-1)


def test_spill_dir_and_inline_threshold_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBER_SPILL_DIR", str(tmp_path))
    monkeypatch.setenv("EMBER_INLINE_THRESHOLD", "4096")

    config = resolve()

    assert config.spill_dir == str(tmp_path)
    assert config.inline_threshold == 4096


def test_namespace_defaults_to_default():
    assert resolve().namespace == "default"
    assert resolve(namespace="team").namespace == "team"


def test_config_is_frozen():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        resolve().num_cpus = 4  # type: ignore[misc]


def test_spin_time_comes_from_the_environment_in_microseconds(monkeypatch):
    assert resolve().spin_s == pytest.approx(50e-6)
    monkeypatch.setenv("EMBER_SPIN_US", "0")
    assert resolve().spin_s == 0
    monkeypatch.setenv("EMBER_SPIN_US", "200")
    assert resolve().spin_s == pytest.approx(200e-6)


@pytest.mark.parametrize("bad", ["fast", "-1", "20000"])
def test_a_bad_spin_time_is_refused_with_the_variable_named(monkeypatch, bad):
    monkeypatch.setenv("EMBER_SPIN_US", bad)
    with pytest.raises(ValueError, match="EMBER_SPIN_US"):
        resolve()


@pytest.mark.parametrize(("args", "env", "expected"), [
    ((None, None), (None, None), ("local", None)),
    ((None, None), ("ray", "10.0.0.1:6379"), ("ray", "10.0.0.1:6379")),  # main.py unchanged
    ((None, None), (None, "auto"), ("ray", "auto")),  # an address names a Ray cluster
    (("local", None), ("ray", "auto"), ("local", None)),  # explicit arguments win
    (("ray", None), (None, "auto"), ("ray", "auto")),  # the environment fills what is missing
    (("ray", "ray://h:10001"), ("local", "auto"), ("ray", "ray://h:10001")),
    ((None, "auto"), ("local", None), ("ray", "auto")),
    (("ray", None), (None, None), ("ray", None)),  # a private Ray on this machine
])
def test_init_arguments_win_and_the_environment_fills_the_rest(args, env, expected):
    from ember.core._settings import choose_backend

    assert choose_backend(*args, *env) == expected


def test_ember_backend_and_address_apply_to_an_explicit_init(monkeypatch):
    from ember.core._settings import resolve_backend

    monkeypatch.setenv("EMBER_BACKEND", "ray")
    monkeypatch.setenv("EMBER_ADDRESS", "auto")
    assert resolve_backend(None, None) == ("ray", "auto")
    monkeypatch.setenv("EMBER_BACKEND", "")
    monkeypatch.delenv("EMBER_ADDRESS")
    assert resolve_backend(None, None) == ("local", None)


@pytest.fixture
def ember_logger_level():
    import logging

    logger = logging.getLogger("ember")
    level = logger.level
    yield logger
    logger.setLevel(level)


@pytest.mark.parametrize(("value", "level"), [("DEBUG", 10), ("warning", 30), ("25", 25)])
def test_ember_log_level_sets_the_ember_loggers_level_at_init(monkeypatch, ember_logger_level,
                                                             value, level):
    import ember

    monkeypatch.setenv("EMBER_LOG_LEVEL", value)
    ember.init(num_cpus=1)
    try:
        assert ember_logger_level.level == level
    finally:
        ember.shutdown()


def test_a_bad_log_level_is_refused_with_the_variable_named(monkeypatch, ember_logger_level):
    import ember

    monkeypatch.setenv("EMBER_LOG_LEVEL", "LOUD")
    with pytest.raises(ValueError, match=r"EMBER_LOG_LEVEL='LOUD'.*DEBUG, INFO"):
        ember.init(num_cpus=1)
    assert not ember.is_initialized()


def test_ember_serve_direct_zero_turns_the_direct_channel_off(monkeypatch):
    from ember.core import serve_direct_enabled

    monkeypatch.delenv("EMBER_SERVE_DIRECT", raising=False)
    assert serve_direct_enabled()
    monkeypatch.setenv("EMBER_SERVE_DIRECT", "0")
    assert not serve_direct_enabled()
