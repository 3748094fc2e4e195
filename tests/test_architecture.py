"""The layout's one rule: a room imports only the rooms above it in
docs/ARCHITECTURE.md (lazy imports inside functions included)."""

import ast
import re
from pathlib import Path

import nonrev

ORDER = [
    "version",
    "progress",
    "linalg",
    "operators",
    "errors",
    "threads",
    "config",
    "outputs",
    "metrics",
    "data",
    "process",
    "models",
    "scores",
    "samplers",
    "regimes",
    "training",
    "experiments",
    "reports",
    "sweep",
    "integrations",
    "cli",
]
IMPORT = re.compile(r"^\s*(?:from|import)\s+nonrev\.([a-z_]+)", re.M)


def test_imports_point_down_the_list_of_rooms():
    src = Path(nonrev.__file__).parent
    rank = {room: i for i, room in enumerate(ORDER)}
    rooms = {
        p.name.removesuffix(".py")
        for p in src.iterdir()
        if p.name != "__init__.py"
        and not p.name.startswith((".", "_"))
        and (p.suffix == ".py" or p.is_dir())
    }
    assert rooms <= set(ORDER) | {"__pycache__"}, rooms - set(ORDER)
    upward = []
    for f in src.rglob("*.py"):
        room = f.relative_to(src).parts[0].removesuffix(".py")
        if room == "__init__":
            continue
        for target in IMPORT.findall(f.read_text()):
            if rank[target] > rank[room]:
                upward.append(f"{f.relative_to(src)} imports nonrev.{target}")
    assert not upward, "\n".join(upward)


# ---------------------------------------------------------------------------- the import graph
def _modules():
    """``{module name: path}`` for every module of the package."""
    src = Path(nonrev.__file__).parent
    out = {}
    for f in src.rglob("*.py"):
        parts = ("nonrev",) + f.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(path):
    """Every ``nonrev`` import of a file (lazy ones inside functions included), as
    ``(module, names)`` pairs; relative imports are refused outright."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (use absolute nonrev.* imports)"
            if node.module == "nonrev" or (node.module or "").startswith("nonrev."):
                found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [
                (a.name, [])
                for a in node.names
                if a.name == "nonrev" or a.name.startswith("nonrev.")
            ]
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_imports_the_package_root():
    """``nonrev/__init__`` gathers the public API; a module inside that imports it
    back depends on everything and makes a cycle."""
    bad = [
        f"{name} imports nonrev"
        for name, path in _modules().items()
        if name != "nonrev"
        for module, _ in _imports(path)
        if module == "nonrev"
    ]
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_from_another_room():
    bad = []
    for name, path in _modules().items():
        for module, names in _imports(path):
            if _room(module) == _room(name):
                continue
            bad += [
                f"{name} imports {module}.{n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_cycle():
    """Modules (not just rooms) form a DAG: no cycle inside a room either (a lazy
    import inside a function counts, since it only hides the cycle)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for module, names in _imports(path):
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            edges.update(subs or [module])
        # a submodule reaching its own package's __init__ is no edge of its own:
        # importing a submodule runs the package first in any case
        graph[name] = {e for e in edges if e in modules and not name.startswith(e + ".")}
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_architecture_test_catches_what_it_should(tmp_path):
    """The three checks above fail on the mistakes they name."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from nonrev.process.ou import _exact_pairs\n    import nonrev\n")
    assert _imports(f) == [("nonrev.process.ou", ["_exact_pairs"]), ("nonrev", [])]
