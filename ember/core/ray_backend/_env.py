"""What the driver's environment gives Ray workers: the settings the storage layer reads.

On the local backend every worker inherits the driver's environment. Ray workers do not: they
start from the environment of the ``ray start`` that made their node. So that storage which works
from the driver (``write_parquet("s3://...")``, a ``TorchTrainer`` with an ``s3://``
``storage_path``) works from every worker, ``ember.init(backend="ray")`` hands these variables, as
they are in the driver when ``init`` runs, to every worker of the job through the job's
``runtime_env`` (Ray's own mechanism; variables the user put in ``runtime_env["env_vars"]`` win).

They travel in a ``worker_process_setup_hook`` (a function that sets them, run by each worker
before its first task), not in ``env_vars``: Ray's runtime_env agent writes a job's ``env_vars``
in clear into its log files on every node, while the hook goes through Ray's control store, in
memory, and only its id is logged. So ember never puts a secret on disk. A hook the user gives
still runs, after ember's.

Forwarded (``FORWARDED_PREFIXES`` and ``FORWARDED_NAMES``):

- every ``AWS_*`` variable: credentials, session token, region, profile, endpoint
  (``AWS_ENDPOINT_URL``), which boto and s3fs read;
- every ``FSSPEC_*`` variable: fsspec's configuration from the environment
  (``FSSPEC_S3_ENDPOINT_URL=...``, ``FSSPEC_S3='{"anon": false}'``);
- fsspec's in-process configuration (``fsspec.config.conf``), when the driver has imported
  fsspec: each protocol's settings as one ``FSSPEC_<PROTOCOL>`` JSON variable (fsspec's own
  format), unless the driver already has that variable;
- ``AZURE_STORAGE_*`` (adlfs), ``GOOGLE_APPLICATION_CREDENTIALS`` and ``GOOGLE_CLOUD_PROJECT``
  (gcsfs).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

FORWARDED_PREFIXES = ("AWS_", "FSSPEC_", "AZURE_STORAGE_")
FORWARDED_NAMES = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")


def forwarded_env(environ: Mapping[str, str], fsspec_conf: Mapping[str, Any] | None = None
                  ) -> dict[str, str]:
    """The variables of ``environ`` (and of fsspec's config) that workers get; pure."""
    out = {name: value for name, value in environ.items()
           if name.startswith(FORWARDED_PREFIXES) or name in FORWARDED_NAMES}
    for protocol, settings in (fsspec_conf or {}).items():
        name = f"FSSPEC_{protocol.upper()}"
        # fsspec reads FSSPEC_<PROTOCOL> as JSON; a protocol with "_" would read as a kwarg.
        if "_" in protocol or not settings or name in out:
            continue
        try:
            out[name] = json.dumps(dict(settings))
        except (TypeError, ValueError):  # a setting that is not JSON cannot travel this way
            continue
    return out


def driver_fsspec_conf() -> Mapping[str, Any] | None:
    """fsspec's configuration in this process, only if fsspec is already imported here."""
    fsspec = sys.modules.get("fsspec")
    config = getattr(fsspec, "config", None) if fsspec is not None else None
    return getattr(config, "conf", None)


def with_forwarded_env(runtime_env: Mapping[str, Any] | None, forwarded: Mapping[str, str]
                       ) -> dict[str, Any] | None:
    """``runtime_env`` with a ``worker_process_setup_hook`` that sets ``forwarded`` in each
    worker (leaving out what the user's ``env_vars`` set), then runs the user's own hook."""
    user_env = dict((runtime_env or {}).get("env_vars") or {})
    env = {k: v for k, v in forwarded.items() if k not in user_env}
    if not env:
        return dict(runtime_env) if runtime_env is not None else None
    merged = dict(runtime_env or {})
    merged["worker_process_setup_hook"] = setup_hook(env, merged.get("worker_process_setup_hook"))
    return merged


def setup_hook(env: Mapping[str, str], then: Any = None) -> Callable[[], None]:
    """A function that sets ``env`` in the process, then calls ``then`` (a callable, or a
    ``"module.function"`` name as Ray takes it). Made here so that it pickles by value."""
    values = dict(env)

    def ember_forwarded_env() -> None:
        import importlib
        import os

        os.environ.update(values)
        if callable(then):
            then()
        elif isinstance(then, str) and then:
            module, _, name = then.rpartition(".")
            getattr(importlib.import_module(module), name)()

    return ember_forwarded_env
