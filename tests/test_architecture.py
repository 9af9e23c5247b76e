"""The house rules of the package layout, read from the source with ``ast``.

- the core (forward/, priors, algorithms/, inference/) imports no histogram library, file
  format, configuration, shell, results, report or command-line code;
- io/ imports no algorithm, inference, results or shell code;
- no module imports a probdeconv module inside a function, nor a private (``_name``) name
  of another module;
- no import loops between modules (a package's ``__init__`` re-exporting its own
  submodules is not a loop);
- no module over 450 lines (the aim is ~400).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "probdeconv"
CORE = {"forward", "priors", "algorithms", "inference"}
ABOVE_CORE = {"io", "config", "shell", "results", "report", "cli"}
EXTERNAL_EDGE = {"histpy", "h5py", "yaml", "sparse", "mhealpy", "scoords", "pandas"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(module: str, path: Path):
    """(target module, imported names, inside a function?) for each import statement."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        q, in_function = node, False
        while q in parents:
            q = parents[q]
            if isinstance(q, ast.FunctionDef | ast.AsyncFunctionDef):
                in_function = True
                break
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], in_function
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_pkg else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        yield base, [a.name for a in node.names], in_function


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = _modules()
EDGES = {m: list(_imports(m, p)) for m, p in MODULES.items()}


def test_the_core_imports_nothing_above_it():
    bad = [(m, t) for m, edges in EDGES.items() if _layer(m) in CORE
           for t, _, _ in edges
           if (t.startswith("probdeconv.") and _layer(t) in ABOVE_CORE)
           or t.split(".")[0] in EXTERNAL_EDGE]
    assert not bad, f"core modules importing shell-side code or file libraries: {bad}"


def test_io_imports_no_algorithm_inference_results_or_shell():
    bad = [(m, t) for m, edges in EDGES.items() if _layer(m) == "io" for t, _, _ in edges
           if t.startswith("probdeconv.")
           and _layer(t) in {"algorithms", "inference", "results", "shell"}]
    assert not bad, bad


def test_no_function_level_or_private_imports_across_modules():
    inside = [(m, t) for m, edges in EDGES.items() for t, _, fn in edges
              if fn and t.startswith("probdeconv")]
    private = [(m, f"{t}.{n}") for m, edges in EDGES.items() for t, names, _ in edges
               if t.startswith("probdeconv") for n in names
               if n.startswith("_") and not n.startswith("__")]
    assert not inside, f"imports inside functions: {inside}"
    assert not private, f"private names imported from other modules: {private}"


def test_no_import_loops():
    graph = {m: set() for m in MODULES}
    for m, edges in EDGES.items():
        is_pkg = MODULES[m].name == "__init__.py"
        for t, names, _ in edges:
            for cand in [t] + [f"{t}.{n}" for n in names]:
                while cand and cand not in MODULES:
                    cand = cand.rpartition(".")[0]
                if cand and cand != m and not (is_pkg and cand.startswith(m + ".")):
                    graph[m].add(cand)
    # Kosaraju: strongly connected components with more than one module are loops
    order, seen = [], set()
    for start in graph:
        if start in seen:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        seen.add(start)
        while stack:
            node, it = stack[-1]
            nxt = next((w for w in it if w not in seen), None)
            if nxt is None:
                order.append(node)
                stack.pop()
            else:
                seen.add(nxt)
                stack.append((nxt, iter(sorted(graph[nxt]))))
    reverse = {m: set() for m in graph}
    for m, ts in graph.items():
        for t in ts:
            reverse[t].add(m)
    loops, assigned = [], set()
    for root in reversed(order):
        if root in assigned:
            continue
        comp, todo = [], [root]
        assigned.add(root)
        while todo:
            v = todo.pop()
            comp.append(v)
            for w in reverse[v] - assigned:
                assigned.add(w)
                todo.append(w)
        if len(comp) > 1:
            loops.append(sorted(comp))
    assert not loops, f"import loops: {loops}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= 450, f"{MODULES[module]} has {n} lines; split it by concept (aim: ~400)"
