"""``runtime_env`` on the local backend: what its workers set up, and what they put back."""

from __future__ import annotations

import os

import pytest

import ember
from ember.errors import RuntimeEnvSetupError
from ember.testing import LeakCheck


def get(refs):
    return ember.get(refs, timeout=60)


@ember.remote
def read_env(name):
    return os.environ.get(name)


@ember.remote
def cwd():
    return os.getcwd()


def test_init_runtime_env_reaches_every_worker_and_tasks_add_to_it():
    ember.init(num_cpus=1, runtime_env={"env_vars": {"EMBER_JOB_VAR": "job"}})
    try:
        @ember.remote
        class Reader:
            def read(self, name):
                return os.environ.get(name)

        override = read_env.options(runtime_env={"env_vars": {"EMBER_JOB_VAR": "task"}})
        assert get(read_env.remote("EMBER_JOB_VAR")) == "job"
        assert get(override.remote("EMBER_JOB_VAR")) == "task"
        assert get(read_env.remote("EMBER_JOB_VAR")) == "job"  # the same worker, put back
        assert get(Reader.remote().read.remote("EMBER_JOB_VAR")) == "job"
        assert "EMBER_JOB_VAR" not in os.environ  # the driver's own environment is untouched
    finally:
        LeakCheck().check()


def test_init_refuses_what_the_local_backend_cannot_set_up():
    with pytest.raises(RuntimeEnvSetupError, match="pip"):
        ember.init(num_cpus=1, runtime_env={"pip": ["requests"]})
    assert not ember.is_initialized()
    with pytest.raises(ValueError, match="unknown runtime_env key"):
        ember.init(num_cpus=1, runtime_env={"envvars": {}})


def test_working_dir_is_the_tasks_current_directory_and_importable(ember_local, tmp_path):
    (tmp_path / "ember_wd_helper.py").write_text("ANSWER = 42\n")

    @ember.remote(runtime_env={"working_dir": str(tmp_path)})
    def use_working_dir():
        import ember_wd_helper

        return os.getcwd(), ember_wd_helper.ANSWER, os.path.exists("ember_wd_helper.py")

    before = get(cwd.remote())
    assert get(use_working_dir.remote()) == (str(tmp_path), 42, True)
    assert get(cwd.remote()) == before


def test_py_modules_make_a_package_importable_in_an_actor(ember_local, tmp_path):
    package = tmp_path / "ember_pm_package"
    package.mkdir()
    (package / "__init__.py").write_text("NAME = 'from py_modules'\n")

    @ember.remote(runtime_env={"py_modules": [str(package)]})
    class User:
        def name(self):
            import ember_pm_package

            return ember_pm_package.NAME

    assert get(User.remote().name.remote()) == "from py_modules"


def test_keys_the_local_backend_cannot_set_up_are_refused_at_submission(ember_local):
    with pytest.raises(RuntimeEnvSetupError, match=r"task .*read_env.*\['pip'\]"):
        read_env.options(runtime_env={"pip": ["requests"]}).remote("X")
    with pytest.raises(RuntimeEnvSetupError, match="conda"):
        ember.remote(runtime_env={"conda": "myenv"})(type("A", (), {})).remote()
