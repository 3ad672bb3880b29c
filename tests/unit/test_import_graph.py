"""No import cycle in src/rafter, counting imports inside functions (lazy ones) too.

The graph is read from the source (``ast``): ``import a.b`` and ``from a import b`` add an edge to the
module named (``a.b`` when it is a module, else ``a``); ``importlib.import_module("a.b")`` with a literal
name counts as well. A package's ``__init__`` running before its submodules is not counted as an edge:
that order is Python's, not the code's choice.
"""

import ast
import pathlib

import rafter

ROOT = pathlib.Path(rafter.__file__).parent



def module_names():
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = ["rafter", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(name, path, modules):
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def add(target, member=None):
        if member and f"{target}.{member}" in modules:
            found.add(f"{target}.{member}")
        elif target in modules:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                add(base, alias.name)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
    found.discard(name)
    return found


def import_graph():
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert "rafter.train" in graph["rafter"]  # importlib.import_module inside __getattr__
    assert "rafter._controller.controller" in graph["rafter.train.torch._trainer"]  # inside fit()


def test_there_is_no_import_cycle():
    found = [sorted(c) for c in cycles(import_graph())]
    assert found == []
