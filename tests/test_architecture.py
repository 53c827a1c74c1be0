"""The shape of the code: no import cycles among builder's modules, counting every import a module makes
(inside functions too, so none can hide a cycle; `if TYPE_CHECKING:` imports aside, they never run); and the
direction of its imports: the stage's code and the shared modules never reach the host's."""

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


def host_modules() -> set[str]:
    """The host's side: builder.host, the `builder.cli` users run, and each backend's `host` module."""
    return {name for name in _modules() if name == "builder.cli" or name.startswith("builder.host")
            or (name.startswith("builder.backends.") and name.rpartition(".")[2] == "host")}


def loaded_with(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """What importing a module loads: its imports, its parent packages (a backend's __init__ with any of its
    modules) and, for builder.plugins, every backend package (what `plugins.load()` imports)."""
    backends = {name for name in graph if name.count(".") == 2 and name.startswith("builder.backends.")}
    loads = {}
    for name, imported in graph.items():
        parents = {name.rsplit(".", i)[0] for i in range(1, name.count("."))}
        loads[name] = imported | parents | (backends if name == "builder.plugins" else set())
    return loads


def reached(loads: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for child in loads[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


def test_the_stage_and_the_shared_modules_never_load_the_host():
    graph = import_graph()
    host, loads = host_modules(), loaded_with(graph)
    assert {"builder.host.cli", "builder.cli", "builder.backends.tensorrt.host"} <= host
    assert "builder.backends.openvino" in reached(loads, "builder.stage.execute")  # through plugins
    for name in sorted(graph.keys() - host):
        assert not reached(loads, name) & host, f"{name} loads the host's {sorted(reached(loads, name) & host)}"


def test_the_layout_keeps_stage_and_host_apart():
    """Top-level modules are the shared ones; the stage's and the host's code sit in their own packages. The
    shared part imports neither side (a backend's stage code comes only through plugins.load())."""
    graph = import_graph()
    top = sorted(n for n in graph if n.count(".") == 1 and not (PACKAGE / n.split(".")[1]).is_dir())
    assert top == ["builder.cli", "builder.code_trust", "builder.errors", "builder.formats", "builder.placement",
                   "builder.plan", "builder.plugins", "builder.records", "builder.util", "builder.versions",
                   "builder.workdir"]
    shared = [n for n in graph if n != "builder.cli" and not n.startswith(("builder.stage", "builder.host",
                                                                              "builder.backends"))]
    assert "builder.config.recipe" in shared
    for name in shared:
        assert not {m for m in graph[name] if m.startswith(("builder.stage", "builder.host"))}, name


# The backends' names (every folder in builder/backends/) and their tools', formats' and hardware's. ONNX itself is
# the interchange format the core converts through, not a vendor.
BACKENDS = sorted(p.name for p in (PACKAGE / "backends").iterdir() if (p / "__init__.py").is_file())
VENDOR = re.compile(rf"\b({'|'.join(BACKENDS)}|tflite|xnnpack|onnx2tf|tf2onnx|nncf|trtexec|jetson|nvidia|cuda"
                    r"|ethos)\b", re.IGNORECASE)


def test_the_core_names_no_vendor():
    naming = {name.removeprefix("builder.") for name, path in _modules().items()
              if not name.startswith("builder.backends.") and VENDOR.search(path.read_text())}
    assert naming == set(), "vendor code belongs in builder/backends/<vendor>/"
