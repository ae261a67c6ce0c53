"""The evaluation and report packages import without cycles: a static walk of every import
statement (function-level ones too) finds no loop, and each module imports on its own in a fresh
interpreter. The report stays light: it never loads torch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mcl/eval", "mcl/report")


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of `found` it imports anywhere in its source, with the packages
    those imports run first."""
    graph = {}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets.add(base)
                targets |= {f"{base}.{alias.name}" for alias in node.names}
        # importing a.b.c runs the package a.b first (unless the importer is inside it already)
        own = _ancestors(name) | {name}
        targets |= {a for t in targets for a in _ancestors(t) if a not in own}
        graph[name] = {t for t in targets if t in found and t != name}
    return graph


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (loop := visit(nxt)):
                return loop
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (loop := visit(node)):
            return loop
    return None


def test_the_cycle_finder_finds_a_loop_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_eval_and_report_modules_import_no_loop():
    found = modules()
    assert {"mcl.eval.scorers.registry", "mcl.eval.caption", "mcl.report.cli"} <= set(found)
    graph = import_graph(found)
    assert "mcl.eval.base" in graph["mcl.eval.caption"]  # helpers come from the shared module
    assert not graph["mcl.eval.base"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


SCRIPT = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "mcl" or m.startswith("mcl.")]:
        del sys.modules[loaded]  # each module first, as in a fresh interpreter
    try:
        importlib.import_module(name)
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


def _python(*args: str) -> str:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_each_module_imports_first_in_a_fresh_interpreter():
    names = [n for n in modules() if not n.endswith("__main__")]
    assert json.loads(_python("-c", SCRIPT, json.dumps(names))) == {}


def test_the_report_never_loads_torch():
    code = "import sys, mcl.report.cli; print(sorted({'torch', 'torchmetrics'} & set(sys.modules)))"
    assert _python("-c", code) == "[]"
