"""The project's imports point one way: CLI -> trainer/export -> model -> parts.

Every module of textgen/ and captioning/ is parsed (not imported), and every import statement
counts, the ones inside functions too: an import placed in a function only hides a circle from
Python's import machinery, it still ties the two modules together. The test fails on any circle
of project-internal imports, and on a textgen module importing captioning (captioning builds on
textgen, never the other way round).
"""

import ast
import os

from helpers import ROOT

PACKAGES = ("textgen", "captioning")


def project_modules():
    """{dotted module name: file path} for every .py file of the packages."""
    modules = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                modules[".".join(parts)] = path
    return modules


def imported_modules(module, path, modules):
    """[(imported project module, line)] of every import statement in the file, at any depth.
    `from package import name` counts as importing the submodule `package.name` when there is
    one, else the package itself."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, `level` - 1 further up
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in modules else base, node.lineno))
    return [(name, line) for name, line in found if name in modules and name != module]


def import_graph():
    """{module: {imported module: first line of such an import}} over the project's modules."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for name, line in imported_modules(module, path, modules):
            edges.setdefault(name, line)
    return graph


def strongly_connected(graph):
    """Tarjan's strongly connected components: the sets of modules that import each other."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def one_cycle(graph, component):
    """A shortest circle through the first member of `component`: [module, ..., module]."""
    start = min(component)
    previous, queue = {start: None}, [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node]):
            if target == start:
                chain = [node]
                while previous[chain[-1]] is not None:
                    chain.append(previous[chain[-1]])
                return chain[::-1] + [start]
            if target in component and target not in previous:
                previous[target] = node
                queue.append(target)
    raise AssertionError(f"no circle through {sorted(component)}")


def describe(graph, cycle):
    """'a (line 3) -> b (line 9) -> a': module a imports b at its line 3, b imports a at 9."""
    steps = [f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(steps + [cycle[-1]])


def test_the_parser_sees_imports_inside_functions_and_from_package_imports():
    graph = import_graph()
    # `from textgen.network.language_model import ...` inside `sample()`, and `from textgen import
    # fused_rnn` at the top of recurrent_stack.py.
    assert "textgen.network.language_model" in graph["textgen.sample"]
    assert "textgen.network.fused_kernels" in graph["textgen.network.recurrent_stack"]
    assert "textgen" not in graph["textgen.network.recurrent_stack"]


def test_no_import_circles():
    graph = import_graph()
    tangles = [c for c in strongly_connected(graph) if len(c) > 1]
    # One circle per tangle, and every import inside it: each of those is a candidate to cut.
    report = []
    for tangle in tangles:
        inside = [
            f"{a} -> {b} (line {graph[a][b]})"
            for a in sorted(tangle)
            for b in sorted(graph[a])
            if b in tangle
        ]
        report.append(
            f"{describe(graph, one_cycle(graph, tangle))}\n"
            f"    imports inside it: {', '.join(inside)}"
        )
    assert not tangles, "import circles:\n" + "\n".join(report)


def test_textgen_does_not_import_captioning():
    graph = import_graph()
    wrong = [
        f"{module} imports {target} (line {line})"
        for module, targets in sorted(graph.items())
        if module.split(".")[0] == "textgen"
        for target, line in sorted(targets.items())
        if target.split(".")[0] == "captioning"
    ]
    assert not wrong, "\n".join(wrong)
