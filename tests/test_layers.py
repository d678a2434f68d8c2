"""The library's import direction (pyproject.toml, docs/architecture.md): the contracts hold, no module
imports itself through others, and a function-local import of a project module is there only to defer
Keras, never to dodge a cycle."""
import ast
import subprocess
import sys
import tomllib

import pytest
from conftest import ROOT

SRC = ROOT / "src"
FRAMEWORKS = {"keras", "tensorflow", "jax", "torch"}


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The src modules an ImportFrom names (a package's submodules when it imports them by name)."""
    if node.level == 0:
        return [node.module] if node.module and node.module.split(".")[0] == "src" else []
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    target = ".".join(base + ([node.module] if node.module else []))
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def imports(top_level_only: bool):
    """{module: set of (imported module, line)} over src, top-level imports only or function-local only."""
    found = {}
    for path in SRC.rglob("*.py"):
        module, tree = module_name(path), ast.parse(path.read_text())
        local = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                 for n in ast.walk(f) if n is not f}
        names = set()
        for node in ast.walk(tree):
            if (id(node) in local) == top_level_only:
                continue
            if isinstance(node, ast.Import):
                names |= {(alias.name, node.lineno) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names |= {(n, node.lineno) for n in resolve(module, path.name == "__init__.py", node)}
                if node.level == 0 and node.module:
                    names.add((node.module, node.lineno))
        found[module] = names
    return found


def test_the_contracts_hold():
    pytest.importorskip("importlinter", reason="the dev extra: pip install -c constraints.txt -e \".[dev]\"")
    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    for contract in contracts:                                   # each contract of pyproject.toml checked, and kept
        assert f"{contract['name']} KEPT" in done.stdout, done.stdout
    assert f"Contracts: {len(contracts)} kept, 0 broken." in done.stdout


def test_no_module_imports_itself_through_others():
    graph, top = {}, imports(True)
    for found in (top, imports(False)):
        for module, names in found.items():
            graph.setdefault(module, set()).update(n for n, _ in names if n in top)
    # Tarjan's strongly connected components: any with two or more modules is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            # A package importing its own submodules is not a cycle unless they import it back.
            if len(component) > 1:
                cycles.append(sorted(component))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_function_local_imports_of_the_project_only_defer_keras():
    top = imports(True)
    keras_bound = set()
    changed = True
    while changed:  # modules that load a framework when imported, directly or through another module
        changed = False
        for module, names in top.items():
            if module not in keras_bound and any(n.split(".")[0] in FRAMEWORKS or n in keras_bound for n, _ in names):
                keras_bound.add(module)
                changed = True
    offenders = [f"{module}:{line} imports {name}" for module, names in imports(False).items()
                 for name, line in names if name in top and name not in keras_bound
                 and module != "src.base.backend"]
    assert offenders == []
