"""The layout holds: packages import only the packages below them, no import circles among
smf's modules, every CLI module in smf.cli."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# The package order of docs/ARCHITECTURE.md, lowest first: a package may import the packages of
# earlier steps; packages on one step may import each other, but not in a circle. `smf` is the
# root package: the public API (`api`), served lazily, and the error and version it re-exports (a
# lower package's `from smf import __version__` depends on `version`, where the name is defined);
# `__main__` is `python -m smf`; `state` writes training state without pickle.
LAYERS = [
    ["version", "errors", "io", "config", "names", "stats", "state", "lock"],
    ["memory"],
    ["data"],
    ["models"],
    ["optim", "distributed", "selection"],
    ["methods"],
    ["evaluate"],
    ["train"],
    ["study", "use"],
    ["api", "smf"],
    ["cli", "__main__"],
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def root_exports() -> dict[str, str]:
    """Name → the smf module it comes from, for the names the root package imports at module level
    (`from smf.errors import SmfError`): `from smf import SmfError` depends on smf.errors, not on the
    root's lazily served API."""
    tree = ast.parse((SRC / "smf" / "__init__.py").read_text())
    return {a.asname or a.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
            and node.level == 0 and (node.module or "").startswith("smf.") for a in node.names}


def import_graph() -> dict[str, set[str]]:
    """smf module → the smf modules it imports, at module level or inside functions."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    exports = root_exports()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules
                           else exports[a.name] if base == "smf" and a.name in exports else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def package(module: str) -> str:
    """`smf.memory.layer` → `memory`; a single module (`smf.selection`) is its own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(package(module), set()).update(package(t) for t in targets if package(t) != package(module))
    return out


def layer_violations(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Every import from a package to one on a later step, every package missing from `layers`,
    and every circle among packages (which catches two packages of one step importing each other)."""
    step = {name: i for i, names in enumerate(layers) for name in names}
    out = [f"{p}: not in LAYERS; add it to the order (here and in docs/ARCHITECTURE.md)"
           for p in sorted({package(m) for m in graph} - set(step))]
    for module in sorted(graph):
        for target in sorted(graph[module]):
            a, b = package(module), package(target)
            if a in step and b in step and step[b] > step[a]:
                out.append(f"{module} imports {target}: {a} (step {step[a]}) may not import {b} (step {step[b]})")
    out += [f"package circle: {' <-> '.join(c)}" for c in cycles(package_graph(graph))]
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_graph_sees_imports():
    graph = import_graph()
    assert "smf.methods.base" in graph["smf.methods.smf"]
    assert "smf.train.loop" in graph["smf.train.stages"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]  # the check itself can fail
    assert "smf.version" in graph["smf.memory.retrofit"] and "smf" not in graph["smf.memory.retrofit"]  # a re-export
    assert "smf.api" in graph["smf"]  # the root's lazy API, imported inside a function


def test_layer_check_can_fail():
    graph = {"smf.memory.layer": {"smf.models"}, "smf.models": {"smf.memory.layer"}, "smf.optim": {"smf.selection"},
             "smf.selection": {"smf.optim"}, "smf.extra": set()}
    found = layer_violations(graph, [["memory"], ["models"], ["optim", "selection"]])
    assert found == [
        "extra: not in LAYERS; add it to the order (here and in docs/ARCHITECTURE.md)",
        "smf.memory.layer imports smf.models: memory (step 0) may not import models (step 1)",
        "package circle: memory <-> models",
        "package circle: optim <-> selection",
    ]


def test_packages_import_only_packages_below_them():
    """Imports inside functions count as much as those at the top (a lazy import is still a
    dependency); so do `if TYPE_CHECKING:` blocks, since a type named in a lower package's
    signature ties it to the package above."""
    found = layer_violations(import_graph(), LAYERS)
    assert not found, "imports against the package order of docs/ARCHITECTURE.md:\n" + "\n".join(found)


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_every_command_module_is_in_the_cli_package():
    from smf.cli import COMMANDS

    assert all(name.startswith("smf.cli.") for name in COMMANDS)
    assert sorted(_module_name(p) for p in (SRC / "smf" / "cli").glob("[!_]*.py")) == sorted(COMMANDS)


def test_the_tests_know_every_module_that_resolves_a_model_by_name():
    """tests/conftest.py's forbid_model_loading replaces resolve_model in each module that imports it by name;
    a module missing from its list would load a model unseen (or keep the stand-in for good)."""
    from conftest import RESOLVES_MODELS

    found = {"smf.models"}
    for path in SRC.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # imports at the module's top
            if isinstance(node, ast.ImportFrom) and node.module == "smf.models" and any(a.name == "resolve_model" for a in node.names):
                found.add(_module_name(path))
    assert found == set(RESOLVES_MODELS)
