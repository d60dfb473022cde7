"""``ember.core._runtime_env``: validation, merging and the local backend's plan (pure)."""

from __future__ import annotations

import os

import pytest

from ember.core import _runtime_env as renv
from ember.errors import RuntimeEnvSetupError


def test_validate_accepts_rays_keys_and_returns_a_plain_copy():
    given = {"env_vars": {"A": "1"}, "working_dir": ".", "py_modules": ["x"], "pip": ["numpy"],
             "config": {"setup_timeout_seconds": 60}, "excludes": ["*.log"]}

    checked = renv.validate(given)

    assert checked == given and checked is not given
    assert renv.validate(None) is None


@pytest.mark.parametrize(
    ("env", "error", "match"),
    [
        ({"env_var": {}}, ValueError, "did you mean 'env_vars'"),
        ({"docker": "x"}, ValueError, "unknown runtime_env key 'docker'"),
        ({"env_vars": {"A": 1}}, TypeError, "str -> str"),
        ({"env_vars": ["A=1"]}, TypeError, "str -> str"),
        ({"working_dir": 3}, TypeError, "working_dir"),
        ({"py_modules": "pkg"}, TypeError, "py_modules"),
        ({"excludes": "*.log"}, TypeError, "excludes"),
        ({"config": {"timeout": 1}}, ValueError, "config"),
        (["env_vars"], TypeError, "must be a dict"),
    ],
)
def test_validate_refuses_unknown_keys_and_bad_values_naming_them(env, error, match):
    with pytest.raises(error, match=match):
        renv.validate(env)


def test_merge_lets_the_child_win_and_merges_env_vars():
    parent = {"env_vars": {"A": "p", "B": "p"}, "working_dir": "/p", "py_modules": ["/m"]}
    child = {"env_vars": {"B": "c"}, "working_dir": "/c"}

    assert renv.merge(parent, child) == {
        "env_vars": {"A": "p", "B": "c"}, "working_dir": "/c", "py_modules": ["/m"]}
    assert renv.merge(None, child) == child
    assert renv.merge(parent, None) == parent
    assert renv.merge(None, None) is None


def test_for_local_refuses_what_installs_software(tmp_path):
    with pytest.raises(RuntimeEnvSetupError, match=r"task f.*\['conda', 'pip'\].*ray backend"):
        renv.for_local({"pip": ["numpy"], "conda": "env", "env_vars": {}}, "task f")


@pytest.mark.parametrize("working_dir", ["s3://bucket/code.zip", "code.zip", "/no/such/dir"])
def test_for_local_refuses_a_working_dir_it_cannot_use(working_dir):
    with pytest.raises(RuntimeEnvSetupError, match="working_dir"):
        renv.for_local({"working_dir": working_dir}, "actor A")


def test_for_local_resolves_paths_and_modules(tmp_path):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    single = tmp_path / "single.py"
    single.write_text("")

    env = renv.for_local({"working_dir": str(tmp_path), "env_vars": {"A": "1"},
                          "py_modules": [str(package), pytest], "config": {}}, "task f")

    assert env is not None
    assert env["working_dir"] == str(tmp_path)
    assert env["py_modules"][0] == str(package)
    assert env["py_modules"][1] == os.path.dirname(pytest.__file__)  # a package's folder
    plan = renv.local_plan({**env, "py_modules": [str(package), str(single)]})
    assert plan == renv.LocalEnv(env_vars={"A": "1"}, cwd=str(tmp_path),
                                 paths=(str(tmp_path),))  # each holder once, in order
    assert renv.for_local({}, "task f") is None
    assert renv.for_local({"config": {}, "excludes": ["x"]}, "task f") is None
