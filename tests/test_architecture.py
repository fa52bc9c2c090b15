"""The package's architecture, read from the source (``ast``; nothing is imported, except in the
one subprocess that checks that torch stays out):

- layers: every ``vaejax`` module imports only from its own layer or the layers below it
  (function-level and relative imports included);
- no import cycle among the modules' imports, top-level and function-level alike (those under
  ``if TYPE_CHECKING:`` never run and are left out);
- imports at the top: a function-level import is only of a slow third-party package listed in
  :data:`LAZY_IMPORTS` (a cycle is broken by moving what both sides need into a lower module, not
  by importing inside a function); no module is imported by a computed name, but where
  :data:`DYNAMIC_IMPORTS` says why;
- private names stay in their module: no ``vaejax`` module imports (or reads through a module it
  imports) another's ``_name``; a helper shared between modules is public;
- no torch anywhere in ``vaejax`` (the PyTorch twins live in ``experiments/benchmarking``);
- size: no module over :data:`MAX_MODULE_LINES` lines, no function over
  :data:`MAX_FUNCTION_LINES`, but for the few listed in :data:`ALLOWED_OVERSIZE`.

``pytest -s tests/test_architecture.py`` prints the layer graph: each layer's modules with their
line counts, which layers each imports, and the largest module and function.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

from tests.helpers import REPO_ROOT, run_python

PACKAGE = "vaejax"

# lowest first; a module belongs to the layer of the longest prefix that names it
LAYERS = (
    ("base", ("vaejax.io", "vaejax.sharding", "vaejax.errors", "vaejax.faults", "vaejax.stopping")),
    ("models", ("vaejax.models",)),
    ("objectives", ("vaejax.objectives",)),
    ("data", ("vaejax.data",)),
    ("training", ("vaejax.training",)),
    ("evaluation", ("vaejax.evaluation",)),
    ("runs", ("vaejax.runs",)),
    ("cli", ("vaejax.cli", "vaejax.flags", "vaejax.failures")),
)
# the lazy facade (PEP 562 __getattr__): imports nothing at import time, may name any layer
FACADE = PACKAGE

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # from the ``def`` line to the last line of the body, decorators excluded
# What may stay over the limits (a table, say), each with the reason. A module is keyed by its
# path, a function by ``path:qualified.name``. A stale entry fails.
ALLOWED_OVERSIZE: dict[str, str] = {}

# What may be imported inside a function (a prefix of the imported module's name), each with the
# reason: slow to import (seconds measured after ``import vaejax.data``, which loads jax) and
# needed by few calls. A stale entry fails.
LAZY_IMPORTS: dict[str, str] = {
    "tensorflow_datasets": "0.3 s; optional at run time: without it the IDX pair is read from "
    "its raw files and a folder directly (vaejax.data.datasets.load_split, folder._have_tfds)",
    "vaejax.data.tfds_builders": "imports tensorflow_datasets at its top (its builders subclass "
    "tfds' classes): as lazy as tfds itself",
    "scipy": "0.3 s (scipy.io); reads SVHN's .mat files, only when SVHN is prepared",
    "sklearn": "1.7 s; the PCA, k-NN and ROC metrics of vaejax.evaluation only",
    "matplotlib": "0.7 s; plots only, and the Agg backend is chosen before pyplot is imported",
    "tensorboardX": "2.5 s; only when a run writes its event file",
    "grain": "0.5 s; only the reader of streamed training data",
    "orbax": "0.3-3 s; only when checkpoints are opened (tests that write none never load it)",
}
# (importer, imported prefix) -> why that one module imports it lazily. A stale entry fails.
LAZY_IMPORTS_IN: dict[tuple[str, str], str] = {
    ("vaejax.errors", "jax"): "vaejax.errors stays importable without jax (2 s), as the facade's "
    "vaejax.ConfigError; only the out-of-memory line asks jax for its device",
}
# Modules that import a module by a computed name (``importlib.import_module(name)``), invisible
# to the checks here, each with the reason. A stale entry fails.
DYNAMIC_IMPORTS: dict[str, str] = {
    FACADE: "the lazy facade: imports the module of a name on first use",
    "vaejax.runs.base": "run_class imports a Run defined outside vaejax, by the name its "
    "config.json wrote",
}


class Import(NamedTuple):
    line: int
    module: str  # the vaejax module (or a third-party module) it imports
    # "top": runs when the importer is imported; "function": inside a function, runs when it is
    # called; "typing": under ``if TYPE_CHECKING:``, never runs
    where: str

    @property
    def top_level(self) -> bool:
        return self.where == "top"


class Module(NamedTuple):
    name: str
    path: Path
    lines: int
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def relpath(self) -> str:
        return self.path.relative_to(REPO_ROOT).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _read_modules(folder: str) -> dict[str, Module]:
    modules = {}
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        text = path.read_text()
        modules[_module_name(path)] = Module(
            _module_name(path), path, len(text.splitlines()), ast.parse(text, filename=str(path))
        )
    return modules


MODULES = _read_modules(PACKAGE)
EXPERIMENTS = _read_modules("experiments")


def layer_of(module: str) -> int | None:
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_from(module: Module, node: ast.ImportFrom) -> str:
    """The absolute name of ``from <this> import ...`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    parts = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: Module, node: ast.AST) -> list[str]:
    """The modules an import statement (or ``importlib.import_module("...")``) loads; ``from
    package import name`` loads ``package.name`` when that is a module, else ``package``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        source = _resolve_from(module, node)
        return sorted(
            {
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                for alias in node.names
            }
        )
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
        )
    ):
        return [node.args[0].value]
    return []


def imports_of(module: Module) -> list[Import]:
    """Every import in ``module``, at any depth, with where it runs (see :class:`Import`)."""
    found: list[Import] = []

    def visit(node: ast.AST, where: str) -> None:
        for target in _targets(module, node):
            found.append(Import(node.lineno, target, where))
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.If) and _is_type_checking(node) and child in node.body:
                visit(child, "typing")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function" if where == "top" else where)
            else:
                visit(child, where)

    visit(module.tree, "top")
    return found


def _package_imports(module: Module) -> list[Import]:
    return [
        i for i in imports_of(module) if i.module == PACKAGE or i.module.startswith(PACKAGE + ".")
    ]


def test_imports_are_found_at_any_depth_and_resolved():
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from . import idx\n"
        "from .. import sharding\n"
        "from vaejax import data\n"
        "if TYPE_CHECKING:\n    from vaejax.runs import config\n"
        "def f():\n    import vaejax.training.step\n"
        "    importlib.import_module('vaejax.evaluation.judge')\n"
    )
    path = REPO_ROOT / PACKAGE / "data" / "example.py"
    module = Module("vaejax.data.example", path, 0, ast.parse(source))
    found = [(i.module, i.where) for i in _package_imports(module)]
    assert found == [
        ("vaejax.data.idx", "top"),
        ("vaejax.sharding", "top"),
        ("vaejax.data", "top"),
        ("vaejax.runs.config", "typing"),
        ("vaejax.training.step", "function"),
        ("vaejax.evaluation.judge", "function"),
    ]


def test_every_module_has_a_layer():
    unplaced = [name for name in MODULES if name != FACADE and layer_of(name) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_layers_import_only_downwards():
    offending = []
    for name, module in MODULES.items():
        if name == FACADE:
            continue
        own = layer_of(name)
        for imp in _package_imports(module):
            if imp.module == FACADE:
                offending.append(
                    f"{module.relpath}:{imp.line} {name} -> {FACADE} (the lazy "
                    f"facade: import from the module that defines the name)"
                )
                continue
            theirs = layer_of(imp.module)
            if theirs is None or own is None or theirs > own:
                what = "no layer" if theirs is None else f"layer {theirs} {LAYERS[theirs][0]}"
                offending.append(
                    f"{module.relpath}:{imp.line} {name} (layer {own} "
                    f"{LAYERS[own][0]}) -> {imp.module} ({what})"
                )
    assert not offending, "imports from a higher layer:\n" + "\n".join(offending)


def _import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` that its imports name, top-level and function-level
    (a submodule importing its own package's ``__init__``, ``from vaejax import data`` in
    ``vaejax.data.x``, is an edge to it; an import under TYPE_CHECKING is none)."""
    return {
        name: {
            i.module
            for i in _package_imports(module)
            if i.where != "typing" and i.module in modules and i.module != name
        }
        for name, module in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def _synthetic(sources: dict[str, str]) -> dict[str, Module]:
    """Modules named after real ones (so that ``from package import name`` resolves), with the
    given source."""
    return {
        name: Module(name, MODULES[name].path, 0, ast.parse(source))
        for name, source in sources.items()
    }


def test_the_import_graph_counts_function_level_imports_but_not_type_checking():
    top = "from vaejax.data import cache\n"
    lazy = "def f():\n    from vaejax.data import idx\n"
    typing = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vaejax.data import idx\n"
    )
    planted = _synthetic({"vaejax.data.idx": top, "vaejax.data.cache": lazy})
    cycle = ["vaejax.data.cache", "vaejax.data.idx", "vaejax.data.cache"]
    assert find_cycle(_import_graph(planted)) == cycle
    unplanted = _synthetic({"vaejax.data.idx": top, "vaejax.data.cache": typing})
    assert find_cycle(_import_graph(unplanted)) is None


def test_no_import_cycles():
    cycle = find_cycle(_import_graph(MODULES))
    assert cycle is None, "import cycle (top-level and function-level imports): " + " -> ".join(
        cycle
    )


def _lazy_allowance(importer: str, imported: str) -> str | None:
    """The entry of LAZY_IMPORTS or LAZY_IMPORTS_IN that lets ``importer`` import ``imported``
    inside a function, or None."""

    def under(prefix: str) -> bool:
        return imported == prefix or imported.startswith(prefix + ".")

    for (module, prefix), _ in LAZY_IMPORTS_IN.items():
        if module == importer and under(prefix):
            return f"{module}: {prefix}"
    return next((prefix for prefix in LAZY_IMPORTS if under(prefix)), None)


def _lazy_imports(modules: dict[str, Module]) -> tuple[list[str], set[str]]:
    """(the function-level imports no allowance covers, the allowances used)."""
    offending, used = [], set()
    for name, module in modules.items():
        for imp in imports_of(module):
            if imp.where != "function":
                continue
            allowance = _lazy_allowance(name, imp.module)
            if allowance is None:
                offending.append(f"{module.relpath}:{imp.line} imports {imp.module}")
            else:
                used.add(allowance)
    return offending, used


def test_the_lazy_import_check_catches_an_import_in_a_function():
    source = (
        "import jax\n"
        "def f():\n    import sklearn.metrics\n    from vaejax.data import cache\n"
        "    from tqdm.auto import tqdm\n    import jax\n"
    )
    offending, used = _lazy_imports(_synthetic({"vaejax.data.idx": source}))
    assert [line.split(" imports ")[1] for line in offending] == [
        "vaejax.data.cache",
        "tqdm.auto",
        "jax",
    ]
    assert used == {"sklearn"}
    offending, used = _lazy_imports(_synthetic({"vaejax.errors": source}))
    assert [line.split(" imports ")[1] for line in offending] == ["vaejax.data.cache", "tqdm.auto"]
    assert used == {"sklearn", "vaejax.errors: jax"}


def test_imports_inside_functions_are_only_of_slow_packages():
    offending, used = _lazy_imports(MODULES)
    assert not offending, (
        "imports inside functions: import these at the top of the module (a function-level "
        "import is only for the slow third-party packages of LAZY_IMPORTS; an import cycle is "
        "broken by moving what both sides need into a lower module):\n" + "\n".join(offending)
    )
    known = set(LAZY_IMPORTS) | {f"{m}: {p}" for m, p in LAZY_IMPORTS_IN}
    stale = sorted(known - used)
    assert not stale, f"LAZY_IMPORTS(_IN) lists what no module imports lazily (remove it): {stale}"


def _dynamic_imports(module: Module) -> list[int]:
    """The lines of ``importlib.import_module(x)`` and ``__import__(x)`` with a computed ``x``."""
    return [
        node.lineno
        for node in ast.walk(module.tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id == "__import__")
        )
        and not _targets(module, node)
    ]


def test_no_module_is_imported_by_a_computed_name():
    found = {name: _dynamic_imports(module) for name, module in MODULES.items()}
    offending = [
        f"{MODULES[name].relpath}:{line}"
        for name, lines in found.items()
        for line in lines
        if name not in DYNAMIC_IMPORTS
    ]
    assert not offending, (
        "modules imported by a computed name, which hides the import from the checks here "
        "(import them at the top, e.g. into a table of modules):\n" + "\n".join(offending)
    )
    stale = sorted(name for name in DYNAMIC_IMPORTS if not found.get(name))
    assert not stale, f"DYNAMIC_IMPORTS lists modules without one (remove them): {stale}"


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of names, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return base and f"{base}.{node.attr}"
    return None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(module: Module, modules: dict[str, Module]) -> list[str]:
    """``line: module._name`` for each private name of another ``vaejax`` module that ``module``
    imports (``from m import _name``) or reads through a module it imports (``m._name``)."""
    found, aliases = [], {}  # local name -> the vaejax module it names
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, node)
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif _is_private(alias.name) and source != module.name:
                    found.append(f"{node.lineno}: {source}.{alias.name}")
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = _dotted(node.value)
            if base is None:
                continue
            head, _, rest = base.partition(".")
            owner = ".".join(filter(None, [aliases.get(head, head), rest]))
            if owner in modules and owner != module.name:
                found.append(f"{node.lineno}: {owner}.{node.attr}")
    return found


def test_private_uses_are_found():
    source = (
        "import vaejax.data.idx\nimport vaejax.data.cache as cache_module\n"
        "from vaejax.data import cache, idx as i\nfrom vaejax.data.idx import _hidden, shown\n"
        "from typing import NamedTuple\n"
        "x = cache._a + i._b + vaejax.data.idx._c + cache_module._d + cache.shown + self._e\n"
        "y = NamedTuple._fields, __name__\n"
    )
    found = private_uses(_synthetic({"vaejax.data.folder": source})["vaejax.data.folder"], MODULES)
    assert sorted(use.split(": ")[1] for use in found) == [
        "vaejax.data.cache._a",
        "vaejax.data.cache._d",
        "vaejax.data.idx._b",
        "vaejax.data.idx._c",
        "vaejax.data.idx._hidden",
    ]


def test_no_private_names_are_used_across_modules():
    uses = sorted(
        f"{module.relpath}:{use}"
        for module in MODULES.values()
        for use in private_uses(module, MODULES)
    )
    assert not uses, (
        "private names of another vaejax module (make the helper public: drop its underscore "
        "and rename it at every use):\n" + "\n".join(uses)
    )


def test_no_torch_in_the_package():
    offending = [
        f"{m.relpath}:{i.line} imports {i.module}"
        for m in MODULES.values()
        for i in imports_of(m)
        if i.module.split(".")[0] in ("torch", "torchvision")
    ]
    assert not offending, "torch in vaejax:\n" + "\n".join(offending)


def test_importing_every_module_leaves_torch_out():
    names = sorted(MODULES)
    code = (
        "import importlib, sys\nimport vaejax\n"
        f"for name in {names!r}:\n    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    )
    proc = run_python(["-c", code], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-2000:]


def _functions(module: Module) -> list[tuple[str, int]]:
    """(qualified name, lines from ``def`` to the end) of every function and method."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((name, child.end_lineno - child.lineno + 1))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(module.tree, "")
    return found


def _oversize() -> dict[str, str]:
    over = {}
    for module in [*MODULES.values(), *EXPERIMENTS.values()]:
        if module.lines > MAX_MODULE_LINES:
            over[module.relpath] = f"{module.lines} lines"
        for name, lines in _functions(module):
            if lines > MAX_FUNCTION_LINES:
                over[f"{module.relpath}:{name}"] = f"{lines} lines"
    return over


def test_modules_and_functions_are_small():
    over = _oversize()
    new = [f"{key} ({size})" for key, size in sorted(over.items()) if key not in ALLOWED_OVERSIZE]
    assert not new, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a "
        f"function (split it):\n" + "\n".join(new)
    )
    stale = sorted(set(ALLOWED_OVERSIZE) - set(over))
    assert not stale, f"ALLOWED_OVERSIZE lists what is no longer over (remove it): {stale}"


def test_print_layer_graph():
    """The layers, bottom up: modules with line counts, the layers each imports; then the
    largest module and function. (Shown with ``pytest -s``.)"""
    graph: dict[int, set[int]] = {}
    for name, module in MODULES.items():
        own = layer_of(name)
        for imp in _package_imports(module):
            theirs = layer_of(imp.module)
            if own is not None and theirs is not None and theirs != own:
                graph.setdefault(own, set()).add(theirs)
    out = [
        "",
        "vaejax layers (lowest first; facade vaejax/__init__.py "
        f"{MODULES[FACADE].lines} lines, exempt)",
    ]
    for index, (layer, _) in enumerate(LAYERS):
        members = [m for n, m in MODULES.items() if n != FACADE and layer_of(n) == index]
        uses = ", ".join(LAYERS[i][0] for i in sorted(graph.get(index, ()))) or "-"
        out.append(f"{index} {layer}: {sum(m.lines for m in members)} lines; imports {uses}")
        out += [f"    {m.name} {m.lines}" for m in members]
    everything = [*MODULES.values(), *EXPERIMENTS.values()]
    largest = max(everything, key=lambda m: m.lines)
    name, lines, where = max(
        ((n, k, m.relpath) for m in everything for n, k in _functions(m)), key=lambda f: f[1]
    )
    out.append(
        f"largest module: {largest.relpath} {largest.lines} lines (limit {MAX_MODULE_LINES})"
    )
    out.append(f"largest function: {where}:{name} {lines} lines (limit {MAX_FUNCTION_LINES})")
    print("\n".join(out))
    assert len(out) > len(LAYERS)
