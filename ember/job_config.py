"""``JobConfig``: settings of the whole job, passed to ``ember.init(job_config=...)``, as
Ray's ``ray.job_config.JobConfig``.

::

    from ember.job_config import JobConfig

    ember.init(job_config=JobConfig(runtime_env={"env_vars": {"MODE": "fast"}},
                                    ray_namespace="training"))

Its ``runtime_env`` applies to every task and actor of the job, as ``init(runtime_env=...)``
does, and its ``ray_namespace`` is the job's namespace, as ``init(namespace=...)``. When
``init`` is also given ``runtime_env`` or ``namespace``, those win (Ray replaces the job
config's with them, without merging). ``metadata`` is kept on the object for the program's own
use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ember.core import _runtime_env

__all__ = ["JobConfig"]

_LIFETIMES = ("non_detached", "detached")


class JobConfig:
    """The job's ``runtime_env``, ``metadata`` and namespace (``ray_namespace``).

    A plain mutable object rather than a frozen dataclass, because Ray's has setters
    (``set_runtime_env``, ``set_metadata``, ``set_ray_namespace``) that ported code calls.
    ``jvm_options`` and ``code_search_path`` are for Java workers, which ember does not run:
    they must stay empty. ``default_actor_lifetime`` is ``"non_detached"`` (actors end with
    the job); ``"detached"`` is refused: pass ``lifetime="detached"`` to the actors that must
    outlive it.
    """

    def __init__(self, jvm_options: list[str] | None = None,
                 code_search_path: list[str] | None = None,
                 runtime_env: Mapping[str, Any] | None = None, _client_job: bool = False,
                 metadata: dict[str, str] | None = None, ray_namespace: str | None = None,
                 default_actor_lifetime: str = "non_detached") -> None:
        java: dict[str, list[str] | None] = {"jvm_options": jvm_options,
                                              "code_search_path": code_search_path}
        for name, value in java.items():
            if value:
                raise ValueError(f"{name}={value!r}: ember runs no Java workers; leave {name} "
                                 "empty")
        self.jvm_options: list[str] = []
        self.code_search_path: list[str] = []
        self.runtime_env: dict[str, Any] = {}
        self.metadata: dict[str, str] = {}
        self.ray_namespace: str | None = None
        self.default_actor_lifetime = "non_detached"
        self._client_job = _client_job
        self.set_runtime_env(runtime_env)
        for key, entry in (metadata or {}).items():
            self.set_metadata(key, entry)
        if ray_namespace is not None:
            self.set_ray_namespace(ray_namespace)
        self.set_default_actor_lifetime(default_actor_lifetime)

    def set_runtime_env(self, runtime_env: Mapping[str, Any] | None,
                        validate: bool = False) -> None:
        """Replace the job's ``runtime_env`` (checked as every ``runtime_env`` is, whatever
        ``validate`` says)."""
        self.runtime_env = _runtime_env.validate(runtime_env, where="JobConfig runtime_env") or {}

    def set_metadata(self, key: str, value: str) -> None:
        """Set one entry of the job's ``metadata``."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata {key!r}: {value!r} must map strings to strings")
        self.metadata[key] = value

    def set_ray_namespace(self, ray_namespace: str) -> None:
        """Set the job's namespace (where its named actors live)."""
        if not isinstance(ray_namespace, str) or not ray_namespace:
            raise ValueError(f"ray_namespace={ray_namespace!r} must be a non-empty string")
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        """Only ``"non_detached"`` (see the class's docstring)."""
        if default_actor_lifetime not in _LIFETIMES:
            raise ValueError(f"default_actor_lifetime={default_actor_lifetime!r} must be one "
                             f"of {', '.join(map(repr, _LIFETIMES))}")
        if default_actor_lifetime == "detached":
            raise ValueError("default_actor_lifetime='detached' is not supported by ember; "
                             "create the actors that must outlive the job with "
                             ".options(lifetime='detached')")
        self.default_actor_lifetime = default_actor_lifetime

    def __repr__(self) -> str:
        return (f"JobConfig(runtime_env={self.runtime_env!r}, metadata={self.metadata!r}, "
                f"ray_namespace={self.ray_namespace!r})")
