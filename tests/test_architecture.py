"""The package's architecture, read from the source (``ast``; nothing is imported, except in the
one subprocess that checks that torch stays out):

- layers: every ``vaejax`` module imports only from its own layer or the layers below it
  (function-level and relative imports included);
- no import cycle among the modules' top-level imports;
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


class Import(NamedTuple):
    line: int
    module: str  # the vaejax module (or a third-party top-level name) it imports
    top_level: bool  # runs when the importer is imported (not in a function, not TYPE_CHECKING)


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
    """Every import in ``module``, at any depth, with whether it runs at import time."""
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for target in _targets(module, node):
            found.append(Import(node.lineno, target, top_level))
        for child in ast.iter_child_nodes(node):
            nested = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or (
                isinstance(node, ast.If) and _is_type_checking(node) and child in node.body
            )
            visit(child, top_level and not nested)

    visit(module.tree, True)
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
    found = [(i.module, i.top_level) for i in _package_imports(module)]
    assert found == [
        ("vaejax.data.idx", True),
        ("vaejax.sharding", True),
        ("vaejax.data", True),
        ("vaejax.runs.config", False),
        ("vaejax.training.step", False),
        ("vaejax.evaluation.judge", False),
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


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules its top-level imports name (a submodule importing its own
    package's ``__init__``, ``from vaejax import data`` in ``vaejax.data.x``, is an edge to it)."""
    return {
        name: {
            i.module
            for i in _package_imports(module)
            if i.top_level and i.module in MODULES and i.module != name
        }
        for name, module in MODULES.items()
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


def test_no_import_cycles():
    cycle = find_cycle(_import_graph())
    assert cycle is None, "import cycle among top-level imports: " + " -> ".join(cycle)


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
