"""``RuntimeEnv`` and ``RuntimeEnvConfig``: a ``runtime_env`` built with keyword arguments, as
Ray's ``ray.runtime_env``.

Both are dicts, so they go wherever a ``runtime_env`` dict goes (``ember.init(runtime_env=...)``,
``.options(runtime_env=...)``, ``JobConfig(runtime_env=...)``), and are checked when built, as
those dicts are checked (unknown fields and wrongly typed values raise at once)::

    from ember.runtime_env import RuntimeEnv

    env = RuntimeEnv(env_vars={"MODE": "fast"}, working_dir="./project")
    task.options(runtime_env=env).remote()

What each field does on each backend is in ``ember.init``'s docstring and the README: the local
backend sets up ``env_vars``, ``working_dir`` and ``py_modules`` itself, and refuses the fields
that install software (``pip``, ``conda``, ...), which need the ray backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ember.core import _runtime_env

__all__ = ["RuntimeEnv", "RuntimeEnvConfig"]


class RuntimeEnvConfig(dict):  # type: ignore[type-arg]
    """The ``config`` field of a ``RuntimeEnv``: how long setting it up may take
    (``setup_timeout_seconds``), whether to install it when the job starts rather than on first
    use (``eager_install``), and which log files to show when set-up fails (``log_files``)."""

    def __init__(self, setup_timeout_seconds: int = 600, eager_install: bool = True,
                 log_files: list[str] | None = None) -> None:
        if isinstance(setup_timeout_seconds, bool) or not isinstance(setup_timeout_seconds, int) \
                or not (setup_timeout_seconds > 0 or setup_timeout_seconds == -1):
            raise ValueError(f"setup_timeout_seconds={setup_timeout_seconds!r} must be a "
                             "positive number of seconds, or -1 for no limit")
        if not isinstance(eager_install, bool):
            raise TypeError(f"eager_install={eager_install!r} must be True or False")
        if log_files is not None and not (isinstance(log_files, list)
                                          and all(isinstance(f, str) for f in log_files)):
            raise TypeError(f"log_files={log_files!r} must be a list of file names")
        super().__init__(setup_timeout_seconds=setup_timeout_seconds,
                         eager_install=eager_install, log_files=list(log_files or []))


class RuntimeEnv(dict):  # type: ignore[type-arg]
    """A ``runtime_env`` dict built from keyword arguments; fields left ``None`` are not set.

    Fields: ``py_modules``, ``working_dir``, ``env_vars``, ``config`` (a dict or a
    ``RuntimeEnvConfig``) and the ones only the ray backend sets up: ``pip``, ``conda``,
    ``uv``, ``container``, ``image_uri``, ``py_executable``, ``worker_process_setup_hook``,
    ``nsight``, ``rocprof_sys`` (and Ray's other known fields as keyword arguments). An
    unknown field or a wrongly typed value raises ``ValueError`` or ``TypeError`` here.
    """

    def __init__(self, *, py_modules: list[Any] | None = None,
                 py_executable: str | None = None, working_dir: str | None = None,
                 pip: list[str] | dict[str, Any] | str | None = None,
                 conda: dict[str, Any] | str | None = None,
                 container: dict[str, Any] | None = None,
                 env_vars: dict[str, str] | None = None,
                 worker_process_setup_hook: Any = None,
                 nsight: str | dict[str, str] | None = None,
                 rocprof_sys: str | dict[str, Any] | None = None,
                 config: dict[str, Any] | RuntimeEnvConfig | None = None,
                 _validate: bool = True, image_uri: str | None = None,
                 uv: list[str] | dict[str, Any] | None = None, **kwargs: Any) -> None:
        fields: dict[str, Any] = {
            "py_modules": py_modules, "py_executable": py_executable,
            "working_dir": working_dir, "pip": pip, "conda": conda, "container": container,
            "env_vars": env_vars, "worker_process_setup_hook": worker_process_setup_hook,
            "_nsight": nsight, "_rocprof_sys": rocprof_sys, "image_uri": image_uri, "uv": uv,
            "config": _config(config),
            **kwargs,
        }
        super().__init__({key: value for key, value in fields.items() if value is not None})
        if _validate:
            _runtime_env.validate(self, where="RuntimeEnv")

    def to_dict(self) -> dict[str, Any]:
        """This environment as a plain dict."""
        return {key: dict(value) if isinstance(value, Mapping) else value
                for key, value in self.items()}

    def env_vars(self) -> dict[str, str]:
        """The ``env_vars`` field (empty when not set)."""
        return dict(self.get("env_vars") or {})

    def working_dir(self) -> str:
        """The ``working_dir`` field (empty when not set)."""
        return str(self.get("working_dir") or "")

    def py_modules(self) -> list[Any]:
        """The ``py_modules`` field (empty when not set)."""
        return list(self.get("py_modules") or [])

    def has_working_dir(self) -> bool:
        """Whether ``working_dir`` is set."""
        return self.get("working_dir") is not None

    def has_pip(self) -> bool:
        """Whether ``pip`` is set."""
        return self.get("pip") is not None

    def has_conda(self) -> bool:
        """Whether ``conda`` is set."""
        return self.get("conda") is not None


def _config(config: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``config`` with Ray's defaults filled in (unknown keys are left for ``validate`` to
    name)."""
    if config is None or isinstance(config, RuntimeEnvConfig):
        return config
    if isinstance(config, Mapping) and set(config) <= _runtime_env.CONFIG_KEYS:
        return RuntimeEnvConfig(**config)
    return config
