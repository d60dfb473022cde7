"""``ember.job_config.JobConfig`` and ``ember.init(job_config=...)``, as Ray's."""

from __future__ import annotations

import os

import pytest

import ember
from ember.job_config import JobConfig
from ember.runtime_env import RuntimeEnv


@ember.remote
def env_and_namespace(name):
    return os.environ.get(name), ember.get_runtime_context().namespace


def test_init_takes_the_job_configs_runtime_env_and_namespace():
    config = JobConfig(runtime_env=RuntimeEnv(env_vars={"EMBER_TEST_JOB": "job"}),
                       metadata={"owner": "me"}, ray_namespace="jobs")
    ember.init(num_cpus=1, job_config=config)
    try:
        assert ember.get(env_and_namespace.remote("EMBER_TEST_JOB")) == ("job", "jobs")
    finally:
        ember.shutdown()
    assert config.metadata == {"owner": "me"}


def test_init_arguments_replace_the_job_configs_as_in_ray():
    config = JobConfig(runtime_env={"env_vars": {"EMBER_TEST_JOB": "job"}},
                       ray_namespace="jobs")
    ember.init(num_cpus=1, job_config=config, namespace="mine",
               runtime_env={"env_vars": {"EMBER_TEST_OTHER": "init"}})
    try:
        assert ember.get(env_and_namespace.remote("EMBER_TEST_JOB")) == (None, "mine")
        assert ember.get(env_and_namespace.remote("EMBER_TEST_OTHER"))[0] == "init"
    finally:
        ember.shutdown()


def test_a_job_config_is_checked_when_built_and_when_passed():
    with pytest.raises(TypeError, match=r"JobConfig runtime_env\['env_vars'\]"):
        JobConfig(runtime_env={"env_vars": {"N": 1}})
    with pytest.raises(ValueError, match="ember runs no Java workers"):
        JobConfig(jvm_options=["-Xmx1g"])
    with pytest.raises(ValueError, match="lifetime='detached'"):
        JobConfig(default_actor_lifetime="detached")
    with pytest.raises(TypeError, match=r"job_config must be an ember\.job_config\.JobConfig"):
        ember.init(num_cpus=1, job_config={"runtime_env": {}})
    assert not ember.is_initialized()
    config = JobConfig()
    config.set_runtime_env({"env_vars": {"A": "1"}})
    config.set_metadata("k", "v")
    assert (config.runtime_env, config.metadata) == ({"env_vars": {"A": "1"}}, {"k": "v"})
    assert ember.job_config.JobConfig is JobConfig  # reachable as Ray's ray.job_config
