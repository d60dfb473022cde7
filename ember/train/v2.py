"""``ember.train.v2``: the names of ``ember.train`` under the module paths of Ray's ``ray.train.v2``.

Why this exists: Ray 2.43 rewrote Ray Train as ``ray.train.v2`` (on with
``RAY_TRAIN_V2_ENABLED=1``, later the default), and Ray's docs, examples and tests import from
those paths: ``from ray.train.v2.api.config import ScalingConfig``, ``from
ray.train.v2.torch.torch_trainer import TorchTrainer``. ember has a single train API, which
already follows Ray's current one, so this module is a set of aliases, not a second
implementation (the project keeps no ``v2`` packages): ``ember.train.v2`` re-exports
``ember.train``'s public names, ``ember.train.v2.api`` and its ``config``, ``context``,
``exceptions``, ``result``, ``train_fn_utils`` modules are ``ember.train`` again, and
``ember.train.v2.torch`` (with ``torch_trainer`` and ``train_loop_utils``) is
``ember.train.torch``, imported (with torch) only when first used.

::

    from ember.train.v2.api.config import RunConfig, ScalingConfig
    from ember.train.v2.torch.torch_trainer import TorchTrainer
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from ember.train import *  # noqa: F403  (the aliased API, by design)
from ember.train import __all__ as _train_all

__all__ = list(_train_all)


class _Alias(types.ModuleType):
    """A module whose attributes are those of ``target`` (imported on first use)."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(name, f"An alias of {target} (see ember.train.v2).")
        self.__alias_target__ = target

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(self.__alias_target__), attr)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__())
                      | set(dir(importlib.import_module(self.__alias_target__))))


# Ray's module path (below ``ray.train.v2``) -> the ember module that holds its names.
ALIASES = {
    "api": "ember.train",
    "api.config": "ember.train",
    "api.context": "ember.train",
    "api.exceptions": "ember.train",
    "api.result": "ember.train",
    "api.train_fn_utils": "ember.train",
    "torch": "ember.train.torch",
    "torch.torch_trainer": "ember.train.torch",
    "torch.train_loop_utils": "ember.train.torch",
}


def _install() -> None:
    modules: dict[str, types.ModuleType] = {"": sys.modules[__name__]}
    for path, target in ALIASES.items():  # parents come before their children
        name = f"{__name__}.{path}"
        module = sys.modules.get(name) or _Alias(name, target)
        sys.modules[name] = module
        modules[path] = module
        parent, _, leaf = path.rpartition(".")
        setattr(modules[parent], leaf, module)


_install()
