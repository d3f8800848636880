"""The package's layers, read from its import statements: a module imports only modules of
its own layer or of lower ones, no two modules import each other (directly or round a
longer cycle, function-level imports included), and the old public entry points still
work."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ul4m4_gpu

PACKAGE = Path(ul4m4_gpu.__file__).parent
#: Lowest first. A module may import from its own layer and the layers before it.
LAYERS = ("kernels", "core", ("io", "datasets"), "estimator", "scale", "evaluation", "cli",
          ("__init__", "streaming", "distributed"))


def layer_of(module: str) -> int:
    """The layer of ``ul4m4_gpu.<module>`` (dotted, below the package)."""
    head = module.split(".")[0]
    for rank, names in enumerate(LAYERS):
        if head in ((names,) if isinstance(names, str) else names):
            return rank
    raise AssertionError(f"ul4m4_gpu.{module} belongs to no layer: add it to LAYERS")


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield ".".join(parts), path


def imported(module: str, path: Path):
    """The ``ul4m4_gpu`` modules imported by one file (dotted, below the package), at any
    depth (function-level imports count too)."""
    package = module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("ul4m4_gpu."):
                    yield node.module.removeprefix("ul4m4_gpu.")
                continue
            base = package[: len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            if target:
                yield target
            else:  # from . import name
                yield from (alias.name for alias in node.names)
            if target:  # ``from .io import files`` imports the module io.files too
                yield from (f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ul4m4_gpu."):
                    yield alias.name.removeprefix("ul4m4_gpu.")


@pytest.mark.parametrize("module, path", list(modules()), ids=lambda v: str(v))
def test_no_module_imports_a_higher_layer(module, path):
    if module.startswith("kernels"):
        return  # the kernels import nothing of the package (checked below)
    own = layer_of(module)
    above = sorted({target for target in imported(module, path) if layer_of(target) > own})
    assert not above, f"ul4m4_gpu.{module} (layer {LAYERS[own]}) imports {above}"


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports (a package as its ``__init__``; a name
    imported from a module, ``from .files import read_table``, is no module and is left
    out)."""
    paths = dict(modules())
    known = lambda target: (target if target in paths else f"{target}.__init__"  # noqa: E731
                            if f"{target}.__init__" in paths else None)
    return {module: {known(t) for t in imported(module, path) if known(t) not in (None, module)}
            for module, path in paths.items()}


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search)."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycle():
    cycle = import_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set()}) is None


def test_the_kernels_import_nothing_of_the_package():
    kernels = Path(ul4m4_gpu.kernels.__file__).parent
    for path in kernels.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from above kernels/"
                assert not (node.module or "").startswith("ul4m4_gpu"), path.name


def test_the_old_public_entry_points_still_import():
    from ul4m4_gpu.distributed import DaskMultiModalArray, DaskUL4M4Imputer  # noqa: F401
    from ul4m4_gpu.streaming import (  # noqa: F401
        DEFAULT_BATCH_ROWS,
        ParquetSource,
        fit_parquet,
        transform_parquet,
    )

    for name in ul4m4_gpu.__all__:
        assert getattr(ul4m4_gpu, name) is not None
