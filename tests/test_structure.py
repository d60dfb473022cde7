"""The package's walls: environment variables are read in one module and listed in the README;
private modules and ``_names`` stay inside their package.

The rules, read from the source with ``ast`` (nothing is imported):

- **Environment.** ``EMBER_*`` variables are read only in ``ember/core/_settings.py``
  (``os.environ.get``, ``os.environ[...]``, ``os.getenv``, ``... in os.environ``); every one it
  reads is a row of the README's "Environment variables" table, and every row is one it reads.
- **Private modules.** A package is a top-level subpackage of ``ember`` (``ember.core``,
  ``ember.data``, ``ember.train``, ``ember.serve``, ``ember.rl``, ``ember.util``,
  ``ember.dashboard``, ``ember.testing``); the modules directly in ``ember/`` (``ember``,
  ``ember.actor``, ``ember.cli``, ...) are the root package. A module is private when a part of
  its dotted name after ``ember`` starts with ``_``. A module may import the private modules
  of its own package; another package's only where ``ALLOWED`` below says so, with the reason.
  The libraries (data, train, serve, rl) have no entry there: they use public names only.
  Module paths written as strings (lazy-loading tables) count as imports.
- **Private names.** ``from X import _name`` (``_name`` not a module) only where ``X`` lies in
  the importing module's own package directory (``ember.train.huggingface`` may not take
  ``_name`` from ``ember.train._session``): what another package needs gets a public name.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import ember

PACKAGE = Path(ember.__file__).parent
ROOT = PACKAGE.parent
SETTINGS = PACKAGE / "core" / "_settings.py"
ENV_NAME = re.compile(r"EMBER_[A-Z0-9_]+")

# (importing package, imported package) -> why the first may use the second's private modules.
ALLOWED = {
    ("ember", "ember.core"): "`ember` and `ember.actor` are the core API's public face; "
                             "ember.core implements it",
    ("ember.util", "ember.core"): "ember.util is the core's second face (Ray's ray.util): its "
                                  "placement groups, scheduling strategies, state and metrics "
                                  "are the core's own",
    ("ember.core", "ember.dashboard"): "ember.init starts the driver's session server and "
                                       "dashboard (observability is owned by the driver)",
    ("ember.dashboard", "ember.core"): "the dashboard serves the driver's records "
                                       "(ember.core._observe)",
}
# (importing module, imported module) -> why: narrower than a whole package.
ALLOWED_MODULES = {
    ("ember.cli", "ember.serve._cli"): "the `ember` command runs each package's own command",
    ("ember.cli", "ember.dashboard._cli"): "the `ember` command runs each package's own command",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(name: str) -> str:
    """``ember.train.huggingface._x`` -> ``ember.train``; ``ember.cli`` -> ``ember``."""
    parts = name.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return ".".join(parts[:2])
    return "ember"


def is_private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split(".")[1:])


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def sources() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), path, ast.parse(path.read_text(), str(path))


def imports(tree: ast.Module) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, name or None) for every import of an ``ember`` module, and every string
    that names one (``"ember.util._gang"`` in a lazy-loading table)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ember":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "ember":
            for alias in node.names:
                yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"ember(\.\w+)+", node.value) and is_module(node.value):
            yield node.lineno, node.value, None


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
        (isinstance(node, ast.Name) and node.id == "environ")


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "EMBER_..."`` assignments (a read may go through such a name)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def environment_reads(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """(line, variable) for every read of a variable named by a constant: ``os.environ.get(V)``,
    ``os.environ[V]``, ``os.environ.pop(V)``, ``os.getenv(V)``, ``V in os.environ``."""
    constants = _constants(tree)

    def named(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    for node in ast.walk(tree):
        key: ast.AST | None = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            on_environ = isinstance(func, ast.Attribute) and func.attr in ("get", "pop") \
                and _is_environ(func.value)
            getenv = (isinstance(func, ast.Attribute) and func.attr == "getenv") or \
                (isinstance(func, ast.Name) and func.id == "getenv")
            if on_environ or getenv:
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and _is_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn))
                                                   for op in node.ops) \
                and any(_is_environ(c) for c in node.comparators):
            key = node.left
        variable = named(key) if key is not None else None
        if variable is not None:
            yield node.lineno, variable


def readme_variables() -> dict[str, list[str]]:
    """The rows of the README's "Environment variables" table: variable -> its cells."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = ENV_NAME.fullmatch(cells[0].strip("`")) if line.startswith("|") else None
        if match:
            rows[match.group()] = cells
    return rows


def test_ember_variables_are_read_only_in_the_settings_module():
    elsewhere = [f"{path.relative_to(ROOT)}:{line}: {variable}"
                 for name, path, tree in sources() if path != SETTINGS
                 for line, variable in environment_reads(tree) if ENV_NAME.fullmatch(variable)]

    assert elsewhere == []


def test_the_readme_lists_every_variable_the_settings_module_reads():
    read = {v for _, v in environment_reads(ast.parse(SETTINGS.read_text()))
            if ENV_NAME.fullmatch(v)}
    rows = readme_variables()

    assert len(read) >= 9  # the scan sees the reads (EMBER_BACKEND, EMBER_SPIN_US, ...)
    assert sorted(read - set(rows)) == []  # read but not documented
    assert sorted(set(rows) - read) == []  # documented but read nowhere
    assert all(len(cells) == 3 and all(cells) for cells in rows.values()), rows


def test_private_modules_stay_in_their_package():
    used: set[tuple[str, str]] = set()
    crossings = []
    for name, path, tree in sources():
        for line, target, imported in imports(tree):
            if imported is not None and is_module(f"{target}.{imported}"):
                target = f"{target}.{imported}"  # from ember.core import _api
            if not is_private(target) or package_of(target) == package_of(name):
                continue
            pair, module_pair = (package_of(name), package_of(target)), (name, target)
            if module_pair in ALLOWED_MODULES:
                used.add(module_pair)
            elif pair in ALLOWED:
                used.add(pair)
            else:
                crossings.append(f"{path.relative_to(ROOT)}:{line}: {target}")

    assert crossings == []
    assert used == set(ALLOWED) | set(ALLOWED_MODULES)  # no stale permission


def test_private_names_are_imported_only_inside_their_package():
    crossings = []
    for name, path, tree in sources():
        own = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for line, target, imported in imports(tree):
            if imported is None or not imported.startswith("_") or imported.startswith("__") \
                    or is_module(f"{target}.{imported}"):
                continue
            if target != own and target.rpartition(".")[0] != own:
                crossings.append(f"{path.relative_to(ROOT)}:{line}: {imported} from {target}")

    assert crossings == []
