"""``ember.runtime_env``: Ray's ``RuntimeEnv`` and ``RuntimeEnvConfig``, dicts checked when
built and accepted wherever a ``runtime_env`` dict is."""

from __future__ import annotations

import os

import pytest

import ember
from ember.runtime_env import RuntimeEnv, RuntimeEnvConfig


def test_runtime_env_is_a_dict_of_the_fields_given():
    env = RuntimeEnv(env_vars={"MODE": "fast"}, working_dir=".", pip=["requests"])

    assert isinstance(env, dict)
    assert env == {"env_vars": {"MODE": "fast"}, "working_dir": ".", "pip": ["requests"]}
    assert env.env_vars() == {"MODE": "fast"} and env.has_working_dir() and env.has_pip()
    assert RuntimeEnv() == {} and not RuntimeEnv().has_conda()
    assert ember.runtime_env.RuntimeEnv is RuntimeEnv  # reachable as Ray's ray.runtime_env


def test_config_gets_rays_defaults():
    env = RuntimeEnv(config={"setup_timeout_seconds": 5})

    assert env["config"] == {"setup_timeout_seconds": 5, "eager_install": True, "log_files": []}
    assert RuntimeEnv(config=RuntimeEnvConfig(eager_install=False))["config"][
        "eager_install"] is False
    with pytest.raises(ValueError, match="setup_timeout_seconds=0"):
        RuntimeEnvConfig(setup_timeout_seconds=0)


@pytest.mark.parametrize(("fields", "error", "message"), [
    ({"env_vars": {"N": 1}}, TypeError, r"RuntimeEnv\['env_vars'\] must map names to strings"),
    ({"workdir": "."}, ValueError, "unknown RuntimeEnv key 'workdir' .did you mean 'working_dir'"),
    ({"config": {"timeout": 1}}, ValueError, r"unknown RuntimeEnv\['config'\] keys \['timeout'\]"),
    ({"py_modules": "pkg"}, TypeError, "must be a list"),
])
def test_wrong_fields_raise_when_built(fields, error, message):
    with pytest.raises(error, match=message):
        RuntimeEnv(**fields)


def test_a_runtime_env_goes_where_a_runtime_env_dict_goes(ember_local):
    @ember.remote
    def read(name):
        return os.environ.get(name)

    env = RuntimeEnv(env_vars={"EMBER_TEST_RUNTIME_ENV": "set"})
    assert ember.get(read.options(runtime_env=env).remote("EMBER_TEST_RUNTIME_ENV")) == "set"
