"""``runtime_env``: the environment of tasks and actors, in Ray's shape, checked in one place.

Pure code: validation (``validate``, at ``init`` and at ``.options()``), merging (``merge``: a
task's or actor's ``runtime_env`` over its parent's, as Ray merges them), and what the local
backend can set up itself (``for_local`` and ``LocalEnv``). Backends apply the result: the ray
backend hands the dict to Ray; the local backend's workers apply a ``LocalEnv`` around each task
(and for the whole life of an actor's process).

On the local backend:

- ``env_vars`` are set in the worker's ``os.environ`` while the task runs (set before, put back
  after, so a reused worker carries nothing over) or for the actor's whole life;
- ``working_dir`` (a local directory) becomes the current directory and the first entry of
  ``sys.path``, as on Ray; it is used in place (Ray uploads a copy);
- ``py_modules`` (local package directories, ``.whl``/``.zip`` files or module objects) are put
  on ``sys.path`` so that each module can be imported;
- ``config`` and ``excludes`` are accepted (they only tune Ray's packaging);
- keys that install software or pick another interpreter (``pip``, ``conda``, ``uv``,
  ``container``, ``image_uri``, ``py_executable``, ...) raise ``RuntimeEnvSetupError``: they
  need the ray backend.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ember.errors import RuntimeEnvSetupError

# Ray's own fields (ray.runtime_env.RuntimeEnv.known_fields, Ray 2.60).
KNOWN = frozenset({
    "env_vars", "working_dir", "py_modules", "excludes", "config", "pip", "conda", "uv",
    "container", "image_uri", "py_executable", "java_jars", "worker_process_setup_hook",
    "_nsight", "_rocprof_sys", "_ray_release", "_ray_commit", "_inject_current_ray",
})
# What the local backend sets up itself (see the module's docstring).
LOCAL = frozenset({"env_vars", "working_dir", "py_modules", "excludes", "config"})
CONFIG_KEYS = frozenset({"setup_timeout_seconds", "eager_install", "log_files"})
_REMOTE_PREFIXES = ("s3://", "gs://", "gcs://", "https://", "http://", "hdfs://", "az://",
                    "abfss://")


def validate(env: Any, where: str = "runtime_env") -> dict[str, Any] | None:
    """``env`` as a plain dict once its keys and value types are checked (None stays None).

    Unknown keys are an error (Ray would forward them to a plugin; ember has none).
    """
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise TypeError(f"{where} must be a dict such as {{'env_vars': {{'KEY': 'value'}}}}, "
                        f"got {type(env).__name__}")
    for key in env:
        if key not in KNOWN:
            close = difflib.get_close_matches(str(key), sorted(KNOWN), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {where} key {key!r}{hint}; known: "
                             f"{', '.join(sorted(k for k in KNOWN if not k.startswith('_')))}")
    env_vars = env.get("env_vars")
    if env_vars is not None and not (
        isinstance(env_vars, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items())
    ):
        raise TypeError(f"{where}['env_vars'] must map names to strings (str -> str), got "
                        f"{env_vars!r}; convert values with str()")
    working_dir = env.get("working_dir")
    if working_dir is not None and not isinstance(working_dir, (str, os.PathLike)):
        raise TypeError(f"{where}['working_dir'] must be a path or a URI, got "
                        f"{type(working_dir).__name__}")
    py_modules = env.get("py_modules")
    if py_modules is not None and not isinstance(py_modules, (list, tuple)):
        raise TypeError(f"{where}['py_modules'] must be a list of paths, URIs or modules, got "
                        f"{type(py_modules).__name__}")
    excludes = env.get("excludes")
    if excludes is not None and not (
        isinstance(excludes, (list, tuple)) and all(isinstance(e, str) for e in excludes)
    ):
        raise TypeError(f"{where}['excludes'] must be a list of patterns (strings)")
    config = env.get("config")
    if config is not None:
        if not isinstance(config, Mapping):
            raise TypeError(f"{where}['config'] must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown {where}['config'] keys {unknown}; known: "
                             f"{', '.join(sorted(CONFIG_KEYS))}")
    return {key: (dict(value) if key == "env_vars" else value) for key, value in env.items()}


def merge(parent: Mapping[str, Any] | None,
          child: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``runtime_env`` of a child (a task's, an actor's) given its parent's, as Ray merges
    them: each field the child sets replaces the parent's, except ``env_vars``, which are
    merged (the child's value wins for a name both set)."""
    if not parent:
        return dict(child) if child else None
    if not child:
        return dict(parent)
    merged = {**parent, **child}
    if "env_vars" in parent and "env_vars" in child:
        merged["env_vars"] = {**parent["env_vars"], **child["env_vars"]}
    return merged


def for_local(env: Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    """``env`` as the local backend sets it up, with ``py_modules`` resolved to paths; raises
    ``RuntimeEnvSetupError`` for what it cannot set up (``what`` names the task or actor)."""
    if not env:
        return None
    refused = sorted(key for key in env if key not in LOCAL)
    if refused:
        raise RuntimeEnvSetupError(
            f"{what}: the local backend cannot set up runtime_env {refused} (it installs no "
            "packages and runs every worker with this Python); install what it needs here, "
            "or use the ray backend (ember.init(backend='ray'))"
        )
    out: dict[str, Any] = {}
    if env.get("env_vars"):
        out["env_vars"] = dict(env["env_vars"])
    if env.get("working_dir") is not None:
        out["working_dir"] = _local_dir(os.fspath(env["working_dir"]), what)
    if env.get("py_modules"):
        out["py_modules"] = [_module_path(m, what) for m in env["py_modules"]]
    return out or None


def _local_dir(path: str, what: str) -> str:
    if path.startswith(_REMOTE_PREFIXES) or path.endswith(".zip"):
        raise RuntimeEnvSetupError(
            f"{what}: runtime_env working_dir={path!r} is an archive or a URI, which the local "
            "backend does not unpack; give a local directory, or use the ray backend"
        )
    if not os.path.isdir(path):
        raise RuntimeEnvSetupError(
            f"{what}: runtime_env working_dir={path!r} is not a directory; give an existing one"
        )
    return os.path.abspath(path)


def _module_path(module: Any, what: str) -> str:
    """The path of one ``py_modules`` entry: a package directory, a .whl/.zip, or a module."""
    if not isinstance(module, (str, os.PathLike)):  # a module object: its package or its file
        package = getattr(module, "__path__", None)
        found: str | None = (next(iter(package), None) if package
                             else getattr(module, "__file__", None))
        if found is None:
            raise RuntimeEnvSetupError(
                f"{what}: runtime_env py_modules entry {module!r} has no files to use")
        return os.path.abspath(os.fspath(found))
    path = os.fspath(module)
    if path.startswith(_REMOTE_PREFIXES):
        raise RuntimeEnvSetupError(
            f"{what}: runtime_env py_modules entry {path!r} is a URI, which the local backend "
            "does not download; give a local path, or use the ray backend"
        )
    if not os.path.exists(path):
        raise RuntimeEnvSetupError(
            f"{what}: runtime_env py_modules entry {path!r} does not exist")
    return os.path.abspath(path)


@dataclass(frozen=True)
class LocalEnv:
    """What a local worker changes for a task or an actor: environment variables, the current
    directory, and the ``sys.path`` entries that come first."""

    env_vars: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    paths: tuple[str, ...] = ()


def local_plan(env: Mapping[str, Any] | None) -> LocalEnv | None:
    """The changes for an ``env`` that ``for_local`` produced (None: nothing to change)."""
    if not env:
        return None
    paths: list[str] = []
    cwd = env.get("working_dir")
    if cwd is not None:
        paths.append(cwd)
    for path in env.get("py_modules") or ():
        # A package directory or a module file is imported by its name: the folder that holds
        # it goes on sys.path. A wheel or a zip goes on sys.path itself (zipimport).
        holds = os.path.isdir(path) or path.endswith(".py")
        paths.append(os.path.dirname(path) if holds else path)
    return LocalEnv(env_vars=dict(env.get("env_vars") or {}), cwd=cwd,
                    paths=tuple(dict.fromkeys(paths)))
