"""``ExecutionOptions`` and ``ExecutionResources``: the ``DataContext.execution_options`` that Ray
programs set (``ctx.execution_options.resource_limits.cpu = 1``), under Ray's names."""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any

_RESOURCE_NAMES = ("cpu", "gpu", "object_store_memory", "memory")


def _unknown(owner: str, name: str, known: list[str]) -> AttributeError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(known))})"
    return AttributeError(f"{owner} has no attribute {name!r}{hint}")


@dataclass
class ExecutionResources:
    """An amount of each resource: a limit (``resource_limits``) or what to leave to other work
    (``exclude_resources``). ``None`` means unset (no limit, nothing excluded).

    - ``cpu`` / ``gpu``: logical CPUs / GPUs.
    - ``object_store_memory``: bytes of the object store.
    - ``memory``: bytes of heap memory (accepted; ember does not plan with it).

    >>> limits = ember.data.ExecutionResources(cpu=1, object_store_memory=2e9)
    >>> limits.cpu
    1
    """

    cpu: float | None = None
    gpu: float | None = None
    object_store_memory: float | None = None
    memory: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _RESOURCE_NAMES:
            raise _unknown("ExecutionResources", name, list(_RESOURCE_NAMES))
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or math.isnan(value) or value < 0):
            raise ValueError(f"ExecutionResources.{name}={value!r} must be a number >= 0 "
                             "(or None: unset)")
        object.__setattr__(self, name, value)

    @classmethod
    def for_limits(cls, cpu: float | None = None, gpu: float | None = None,
                   object_store_memory: float | None = None,
                   memory: float | None = None) -> ExecutionResources:
        """Limits, with each one left unset being no limit (``inf``), as Ray's ``for_limits``."""
        inf = math.inf
        return cls(inf if cpu is None else cpu, inf if gpu is None else gpu,
                   inf if object_store_memory is None else object_store_memory,
                   inf if memory is None else memory)

    @classmethod
    def zero(cls) -> ExecutionResources:
        """No resources at all."""
        return cls(0.0, 0.0, 0.0, 0.0)


def _limit(value: float | None) -> float | None:
    """A limit as a number, or None when there is none (unset or ``inf``)."""
    return None if value is None or math.isinf(value) else float(value)


def _zero_resources() -> ExecutionResources:
    return ExecutionResources(cpu=0.0, gpu=0.0, object_store_memory=0.0, memory=0.0)


@dataclass
class ExecutionOptions:
    """How executions run, as Ray's ``ray.data.ExecutionOptions`` (``DataContext.
    execution_options``). What ember does with each:

    - ``resource_limits``: ``cpu`` / ``gpu`` cap the CPUs the executor plans its concurrency
      with and the GPU tasks it runs at once; ``object_store_memory`` caps its memory budget
      (``DataContext.resolved_budget()``); ``memory`` is accepted and has no effect.
    - ``exclude_resources``: ``cpu`` is ``DataContext.excluded_cpus`` (the same setting: CPUs
      other work holds, which the executor does not plan with); the others have no effect.
    - ``preserve_order``: ``DataContext.preserve_order`` (the same setting, either spelling).
    - ``verbose_progress``: ``True`` shows a progress bar per operator; ``False`` only the bar
      of the dataset's output (last) operator.
    - ``locality_with_output``, ``actor_locality_enabled``, ``label_selector``: accepted, no
      effect (ember places tasks by resources only).
    """

    resource_limits: ExecutionResources = field(default_factory=ExecutionResources)
    exclude_resources: ExecutionResources = field(default_factory=_zero_resources)
    locality_with_output: bool | list[str] = False
    preserve_order: bool = False
    actor_locality_enabled: bool = True
    verbose_progress: bool = True
    label_selector: dict[str, str] | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        names = [f.name for f in fields(ExecutionOptions)]
        if name not in names:
            raise _unknown("ExecutionOptions", name, names)
        if name in ("resource_limits", "exclude_resources"):
            if value is None:
                value = ExecutionResources() if name == "resource_limits" else _zero_resources()
            if not isinstance(value, ExecutionResources):
                raise TypeError(f"ExecutionOptions.{name} takes an ExecutionResources, got "
                                f"{type(value).__name__}")
        if name == "exclude_resources" and value.cpu is not None:
            ExecutionResources(cpu=value.cpu)  # the same check as assigning .cpu
        object.__setattr__(self, name, value)

    def copy(self) -> ExecutionOptions:
        """An independent copy (its resources too)."""
        return copy.deepcopy(self)

    # -- what the executor reads once per execution --------------------------------------------
    def cpu_limit(self) -> float | None:
        """The limit on CPUs as a number; ``None`` when there is none (unset or ``inf``)."""
        return _limit(self.resource_limits.cpu)

    def gpu_limit(self) -> float | None:
        """The limit on GPUs as a number; ``None`` when there is none (unset or ``inf``)."""
        return _limit(self.resource_limits.gpu)

    def object_store_limit(self) -> float | None:
        """The limit on object store bytes as a number; ``None`` when there is none (unset or ``inf``)."""
        return _limit(self.resource_limits.object_store_memory)
