"""No import cycle in src/httpay: a model never imports its view, a dialect never imports the flow.

Read from the source with `ast`, not by importing, so an import inside a function or under
`if TYPE_CHECKING:` counts the same as one at the top: each is a dependency a reader must follow,
and a function-level import is how the cycles of the past were hidden. Relative imports are
resolved; `importlib.import_module("httpay.x")` with a literal name counts; `from httpay.x import y`
where `y` is a submodule counts as importing `httpay.x.y`, and as importing `httpay.x` too when any
name it takes is not a submodule (it comes from `httpay/x/__init__.py`). A parent package is not
counted just because a submodule is named (every module would otherwise depend on
`httpay/__init__.py`), as `import httpay.x.y` is counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "httpay"


def module_files(src: Path = SRC, root: str = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (`httpay.ledger` for ledger/__init__.py)."""
    out: dict[str, Path] = {}
    for path in sorted((src / root).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name `from <level dots><name> import ...` written in `module` refers to."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]  # a module's own package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(module: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The package's own modules `module` imports anywhere in its source."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module)
            subs = {f"{target}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
            found.update(subs & known)
            if subs - known:  # a name defined by the package's __init__ (or a star): the package itself
                found.add(target)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in ("import_module", "__import__")):
            found.add(node.args[0].value)  # importlib.import_module("httpay.apps.display") is an import too
    return {m for m in found if m in known and m != module}


def import_graph(src: Path = SRC, root: str = ROOT) -> dict[str, set[str]]:
    files = module_files(src, root)
    return {m: imports_of(m, p, files) for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (about a hundred)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups, key=lambda g: (-len(g), g))


def a_path(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """One concrete loop through `group` (start -> ... -> start), to say where to cut."""
    members = set(group)
    start = group[0]
    prev: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    loop = [v]
                    while loop[-1] != start:
                        loop.append(prev[loop[-1]])
                    return [start, *reversed(loop[:-1]), start] if v != start else [start, start]
                if w not in seen:
                    seen.add(w)
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return group


def _describe(graph: dict[str, set[str]], groups: list[list[str]]) -> Iterator[str]:
    for g in groups:
        yield f"{len(g)} modules: {', '.join(g)}\n    e.g. {' -> '.join(a_path(graph, g))}"


def test_src_httpay_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "httpay.apps.display" in graph and "httpay.ledger.base" in graph  # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles in src/httpay (function-level and TYPE_CHECKING imports count):\n" + "\n".join(
        _describe(graph, found))


def _write(tmp: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp / "pkg" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return tmp


def test_the_checker_sees_hidden_imports(tmp_path: Path) -> None:
    """The ways the old cycle hid: a function-level import, a TYPE_CHECKING import, a relative one,
    and `from pkg import submodule`; each is found, and an acyclic package passes."""
    src = _write(tmp_path, {
        "__init__.py": "",
        "model.py": "def show():\n    from pkg.view import render\n",
        "view.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .model import Model\n",
        "sub/__init__.py": "",
        "sub/a.py": "from .. import b\n",
        "b.py": "from pkg.sub import a\n",
        "c.py": "import pkg.model\nfrom pkg import safe\n",
        "d.py": "from pkg import safe, VERSION\n",
        "e.py": "import importlib\ndef later():\n    return importlib.import_module('pkg.safe')\n",
        "safe.py": "",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.c"] == {"pkg.model", "pkg.safe"}
    assert graph["pkg.d"] == {"pkg", "pkg.safe"}
    assert graph["pkg.e"] == {"pkg.safe"}
    assert cycles(graph) == [["pkg.b", "pkg.sub.a"], ["pkg.model", "pkg.view"]]
    assert a_path(graph, ["pkg.model", "pkg.view"]) == ["pkg.model", "pkg.view", "pkg.model"]
    text = "\n".join(_describe(graph, cycles(graph)))
    assert "pkg.model -> pkg.view -> pkg.model" in text
    del graph["pkg.view"]
    graph["pkg.b"] = set()
    assert cycles(graph) == []


MODELS = ("httpay.lightning", "httpay.protocols.l402_v02", "httpay.ledger.models", "httpay.ledger.base",
          "httpay.apps.approvals", "httpay.view", "httpay.amounts", "httpay.safe", "httpay.errors")


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


@pytest.mark.parametrize("model", MODELS)
def test_models_never_import_their_views(model: str) -> None:
    """A model draws itself from its own `View`; the compositions in display (and the apps that
    show them) import models, never the other way, not even through another module."""
    below = reachable(import_graph(), model)
    assert model not in below, f"{model} imports itself back through {sorted(below)}"
    assert not below & {"httpay.apps.display", "httpay.apps.dashboard", "httpay.apps.cli", "httpay.demo.story"}, sorted(below)


def test_the_view_module_sits_below_every_model() -> None:
    assert reachable(import_graph(), "httpay.view") <= {"httpay.safe", "httpay.amounts"}
