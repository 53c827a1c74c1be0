"""The shape of the code: no import cycles among builder's modules, counting every import a module makes
(inside functions too, so none can hide a cycle; `if TYPE_CHECKING:` imports aside, they never run)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import builder

PACKAGE = Path(builder.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            continue
        yield node
        yield from _runtime_nodes(node)


def import_graph() -> dict[str, set[str]]:
    """module -> the builder modules it imports (`from builder.x import y` is builder.x.y when y is a module)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "builder":
                imported |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                             for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.split(".")[0] == "builder"}
        graph[name] = imported & modules.keys() - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_of_builder_imports_itself_back():
    graph = import_graph()
    assert len(graph) > 80 and "builder.backends.openvino.runtime" in graph["builder.backends.openvino"]
    assert cycles(graph) == []


# The backends' names (every folder in builder/backends/) and their tools', formats' and hardware's. ONNX itself is
# the interchange format the core converts through, not a vendor.
BACKENDS = sorted(p.name for p in (PACKAGE / "backends").iterdir() if (p / "__init__.py").is_file())
VENDOR = re.compile(rf"\b({'|'.join(BACKENDS)}|tflite|xnnpack|onnx2tf|tf2onnx|nncf|trtexec|jetson|nvidia|cuda"
                    r"|ethos)\b", re.IGNORECASE)


def test_the_core_names_no_vendor():
    naming = {name.removeprefix("builder.") for name, path in _modules().items()
              if not name.startswith("builder.backends.") and VENDOR.search(path.read_text())}
    assert naming == set(), "vendor code belongs in builder/backends/<vendor>/"
