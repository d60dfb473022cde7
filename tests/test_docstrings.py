"""Every public name has a docstring, and the examples in docstrings run.

Public means reachable from the ``__all__`` of a public module: a module of the ``ember``
package whose dotted name has no part starting with ``_``, found by walking the package on
disk, so modules added later are covered without a change here. The backends under
``ember.core`` are left out: users reach them only through ``ember.init(backend=...)``, and
their methods implement the protocol documented in ``ember/core/_backend.py``.

For a public class, its public methods and properties count too, including those it inherits
from ember's own (possibly private) base classes; a method that overrides a documented one
inherits its docstring. A dataclass's generated ``__doc__`` (its signature) is not a docstring.

The ``>>>`` examples of every such docstring run as doctests, one test per module, with
``ember`` in their namespace; a runtime an example starts is shut down (and checked for leaks)
after the module's examples. Mark an example that cannot run here with ``# doctest: +SKIP``.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import pkgutil
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ember
from ember.testing import LeakCheck

PACKAGE = Path(ember.__file__).parent
EXCLUDED = ("ember.core",)  # the backends: see the module docstring


def public_module_names(path: Path = PACKAGE, prefix: str = "ember") -> list[str]:
    """Dotted names of the public modules under ``path``, without importing them."""
    names = [prefix]
    for info in pkgutil.iter_modules([str(path)]):
        name = f"{prefix}.{info.name}"
        if info.name.startswith("_") or name.startswith(EXCLUDED):
            continue
        if info.ispkg:
            names += public_module_names(path / info.name, name)
        else:
            names.append(name)
    return sorted(names)


def _generated_doc(cls: type) -> str | None:
    """The ``__doc__`` that ``dataclass`` (or ``NamedTuple``) writes when a class has none."""
    if dataclasses.is_dataclass(cls):
        try:
            return cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
        except (TypeError, ValueError):
            return None
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return f"{cls.__name__}({', '.join(cls._fields)})"
    return None


def own_doc(obj: Any) -> str | None:
    """``obj``'s own docstring: not inherited (classes) and not generated (dataclasses)."""
    if isinstance(obj, type):
        doc = obj.__dict__.get("__doc__")
        if doc is not None and doc == _generated_doc(obj):
            return None
    else:
        doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else None


def _member_doc(cls: type, name: str) -> str | None:
    """The docstring of method or property ``name`` of ``cls``, or of what it overrides."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            doc = getattr(klass.__dict__[name], "__doc__", None)
            if isinstance(doc, str) and doc.strip():
                return doc
    return None


_ROUTINES = (types.FunctionType, staticmethod, classmethod, property)


def documented_things(module: types.ModuleType) -> Iterator[tuple[str, Any, str | None, Any]]:
    """``(qualified name, owner, docstring or None, object)`` for each public function,
    class, method and property reachable from ``module.__all__``. ``owner`` is the module or
    class that defines the object (whose namespace its examples run in)."""
    for name in getattr(module, "__all__", ()):
        obj = getattr(module, name)
        if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue  # modules are walked on their own; constants carry no docstring
        if not getattr(obj, "__module__", "").startswith("ember"):
            continue  # re-exported from another library
        qualified = f"{module.__name__}.{name}"
        yield qualified, inspect.getmodule(obj), own_doc(obj), obj
        if not inspect.isclass(obj):
            continue
        seen: set[str] = set()
        for klass in obj.__mro__:
            if not klass.__module__.startswith("ember"):
                continue
            for attr, value in vars(klass).items():
                if attr.startswith("_") or attr in seen or not isinstance(value, _ROUTINES):
                    continue
                seen.add(attr)
                yield f"{qualified}.{attr}", klass, _member_doc(obj, attr), value


def missing_docstrings(module: types.ModuleType) -> list[str]:
    missing = [] if own_doc(module) else [f"{module.__name__} (the module)"]
    return missing + [name for name, _, doc, _ in documented_things(module) if doc is None]


MODULES = public_module_names()


def test_the_walk_finds_the_public_modules_and_no_private_one() -> None:
    for expected in ("ember", "ember.data", "ember.train.torch", "ember.serve.handle",
                     "ember.rl", "ember.util.queue", "ember.exceptions", "ember.testing"):
        assert expected in MODULES
    assert not [m for m in MODULES if "._" in m or m.startswith("ember.core")]


def test_the_check_tells_documented_from_undocumented_names() -> None:
    """The check itself, on a module made up for it: it can fail."""
    module = types.ModuleType("ember.fake", "A made-up module.")

    def documented() -> None:
        """I say what I do."""

    def undocumented() -> None:
        pass

    @dataclasses.dataclass
    class Config:  # dataclass writes "Config(size: int = 1)" as its __doc__
        size: int = 1

    class Base:
        """A base."""

        def run(self) -> None:
            """Run it."""

    class Child(Base):
        """A child."""

        def run(self) -> None:  # overrides a documented method: inherits its docstring
            pass

        def stop(self) -> None:
            pass

        @property
        def size(self) -> int:
            return 1

        def _private(self) -> None:
            pass

    for obj in (documented, undocumented, Config, Base, Child):
        obj.__module__ = "ember.fake"
        setattr(module, obj.__name__, obj)
    module.__all__ = ["Child", "Config", "documented", "undocumented"]

    assert missing_docstrings(module) == ["ember.fake.Child.stop", "ember.fake.Child.size",
                                          "ember.fake.Config", "ember.fake.undocumented"]


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    missing = missing_docstrings(importlib.import_module(module_name))
    assert not missing, f"public names without a docstring: {missing}"


def _examples(module_name: str, claimed: set[int]) -> list[doctest.DocTest]:
    """The doctests in the docstrings of ``module_name``'s public names not seen before."""
    module = importlib.import_module(module_name)
    found = [(module_name, module, module.__doc__, module)]
    found += list(documented_things(module))
    parser = doctest.DocTestParser()
    tests = []
    for name, owner, doc, obj in found:
        if not doc or ">>>" not in doc or id(obj) in claimed:
            continue
        claimed.add(id(obj))
        home = owner if inspect.ismodule(owner) else inspect.getmodule(owner)
        globs = {**(vars(home) if home is not None else {}), "ember": ember}
        filename = getattr(home, "__file__", None)
        tests.append(parser.get_doctest(doc, globs, name, filename, 0))
    return tests


def _claims_before(module_name: str) -> set[int]:
    """Objects whose examples an earlier module's test already runs (one run each)."""
    claimed: set[int] = set()
    for earlier in MODULES[:MODULES.index(module_name)]:
        _examples(earlier, claimed)
    return claimed


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(module_name: str) -> None:
    tests = _examples(module_name, _claims_before(module_name))
    if not tests:
        pytest.skip(f"no examples in {module_name}'s docstrings")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    with LeakCheck(timeout=15):  # shuts down a runtime an example started
        for test in tests:
            output: list[str] = []
            result = runner.run(test, out=output.append)
            if result.failed:
                failures.append("".join(output))
    assert not failures, "\n".join(failures)
