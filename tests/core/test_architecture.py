"""The layout shows the architecture, and the tests hold it there (issue 11).

(a) The flow and the quote never name a dialect: no "l402", "x402", "lsat", "mpp", "v0.2" in their
    code (strings or names; prose in docstrings and comments may explain), and no import of a
    dialect's module: a new dialect plugs in without a branch in the flow.
(b) The library imports nothing from the apps (`httpay.apps`: CLI, dashboard, agent, approvals; and
    the demo), at module level or inside a function: not the core, the dialects, the protocols, the
    wallets, the signers, the ledger, nor any top-level module. The apps and the demo may import
    the library (and the demo the apps).
(c) `import httpay` loads none of the optional parts' heavy dependencies (the MCP SDK, the
    PostgreSQL driver, the web server): a client needs only the core's.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "httpay"
CORE = SRC / "core"
PURE = ("flow.py", "quote.py")  # the dialect-blind heart: the payment flow and the one decision
DIALECT_WORDS = ("l402", "x402", "lsat", "mpp", "v0.2", "v02")
DIALECT_PACKAGES = ("httpay.dialects", "httpay.protocols")
DIALECT_MODULES = ("httpay.x402_pay",)  # today's second flow, x402's own
APPS = ("httpay.apps", "httpay.demo")
LIBRARY = ("httpay.core", "httpay.dialects", "httpay.protocols", "httpay.wallets", "httpay.signers", "httpay.ledger")
OPTIONAL = ("mcp", "psycopg", "starlette", "uvicorn")


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, as_module: str | None = None) -> list[tuple[int, str]]:
    """Every module `path` imports, anywhere in it (function-level included), relative imports
    resolved (as if it were module `as_module`, default its own name), with `from pkg import name`
    also counted as `pkg.name` (it may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = as_module or module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names if alias.name != "*"]
    return out


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def is_dialect_module(module: str) -> bool:
    return within(module, DIALECT_MODULES) or any(module.startswith(p + ".") for p in DIALECT_PACKAGES)


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of the module, its classes and functions."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def dialect_names(path: Path) -> list[str]:
    """Every string literal and identifier in `path` that names a dialect, as 'line: text'."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = docstrings(tree)
    found: list[str] = []

    def check(line: int, text: str, what: str) -> None:
        low = text.lower()
        hits = [w for w in DIALECT_WORDS if w in low]
        if hits:
            found.append(f"{path.name}:{line}: {what} {text[:60]!r} names {', '.join(hits)}")

    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            check(line, node.value, "string")
        elif isinstance(node, ast.Name):
            check(line, node.id, "name")
        elif isinstance(node, ast.Attribute):
            check(line, node.attr, "attribute")
        elif isinstance(node, ast.arg):
            check(line, node.arg, "argument")
        elif isinstance(node, ast.keyword) and node.arg:
            check(line, node.arg, "keyword")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            check(line, node.name, "definition")
        elif isinstance(node, ast.alias):
            check(line, node.asname or node.name, "import")
    return found


def core_files() -> list[Path]:
    assert CORE.is_dir(), f"{CORE.relative_to(SRC.parent.parent)} does not exist: the rebuilt core lives there (issue 11)"
    return sorted(CORE.rglob("*.py"))


# -- a ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PURE)
def test_the_flow_and_the_quote_name_no_dialect(name: str) -> None:
    path = CORE / name
    assert path.is_file(), f"src/httpay/core/{name} does not exist yet: the one dialect-blind {name[:-3]} (issue 11)"
    assert not dialect_names(path), "the core branches on a dialect:\n" + "\n".join(dialect_names(path))
    dialects = [f"{name}:{line}: imports {mod}" for line, mod in imported(path) if is_dialect_module(mod)]
    assert not dialects, "the core imports a dialect's module:\n" + "\n".join(dialects)


PROBE = '''"""A flow that explains, in prose, that it never knows L402 from x402 or LSAT: allowed."""
from httpay.protocols import l402_v02
from ..dialects.x402 import X402Challenge


def pay(challenge):
    """Docstrings may name x402."""
    import httpay.x402_pay
    if challenge.protocol == "mpp":
        return challenge.l402
    return V02_KEY
'''


def test_the_dialect_check_sees_what_it_must(tmp_path: Path) -> None:
    """The checks of (a) catch a dialect string, a dialect attribute or name, and every way of importing
    a dialect's module; prose in docstrings is not a branch."""
    probe = tmp_path / "flow.py"
    probe.write_text(PROBE)
    found = "\n".join(dialect_names(probe))
    assert "'mpp'" in found and "'l402'" in found and "'V02_KEY'" in found and "'l402_v02'" in found
    assert "never knows" not in found and "Docstrings" not in found
    mods = [m for _, m in imported(probe, "httpay.core.flow") if is_dialect_module(m)]
    assert {"httpay.protocols.l402_v02", "httpay.dialects.x402", "httpay.x402_pay"} <= set(mods)


# -- b ---------------------------------------------------------------------------------------------
def test_the_core_imports_no_app() -> None:
    files = core_files()
    for name in PURE:
        assert CORE / name in files, f"src/httpay/core/{name} does not exist yet (issue 11)"
    bad = [f"{path.relative_to(SRC)}:{line}: imports {mod}" for path in files for line, mod in imported(path)
           if within(mod, APPS)]
    assert not bad, "the core imports an app (the apps may import the core, never the reverse):\n" + "\n".join(bad)


def library_files(package: str) -> list[Path]:
    folder = SRC.joinpath(*package.split(".")[1:])
    assert folder.is_dir(), f"{folder.relative_to(SRC.parent.parent)} does not exist (issue 11's layout)"
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("package", LIBRARY)
def test_the_library_imports_no_app(package: str) -> None:
    """Each library package stands without the apps: `pip install httpay` and a Client never need them."""
    bad = [f"{path.relative_to(SRC)}:{line}: imports {mod}" for path in library_files(package)
           for line, mod in imported(path) if within(mod, APPS)]
    assert not bad, f"{package} imports an app (the apps may import it, never the reverse):\n" + "\n".join(bad)


def test_the_top_level_modules_import_no_app() -> None:
    """The client, policy, config, errors, views and the rest at the top of the package: no app either
    (`httpay.ApprovalQueue` is a lazy export by name, loaded only when asked for). `__main__.py` is
    the command itself (`python -m httpay`), run and never imported by the library."""
    files = sorted(f for f in SRC.glob("*.py") if f.name != "__main__.py")
    assert SRC / "client.py" in files
    bad = [f"{path.relative_to(SRC)}:{line}: imports {mod}" for path in files for line, mod in imported(path)
           if within(mod, APPS)]
    assert not bad, "a top-level module imports an app:\n" + "\n".join(bad)


def test_every_module_is_library_or_app() -> None:
    """A new package lands in the library (and is checked above) or in the apps: none escapes the check."""
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    known = {name.split(".")[1] for name in LIBRARY + APPS}
    assert packages <= known, f"packages neither library nor app: {sorted(packages - known)}: add them to LIBRARY or APPS"


def test_the_import_check_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The walk of (b) counts an import inside a function and a relative one (`from ..apps.cli import main`)."""
    probe = tmp_path / "drivers.py"
    probe.write_text("def f():\n    from ..apps.cli import main\n    import httpay.demo.server\n"
                     "    from ..apps import approvals\n    from .. import apps\n")
    mods = {m for _, m in imported(probe, "httpay.core.drivers") if within(m, APPS)}
    assert {"httpay.apps.cli", "httpay.demo.server", "httpay.apps.approvals", "httpay.apps"} <= mods


# -- c ---------------------------------------------------------------------------------------------
def test_importing_httpay_loads_no_optional_dependency() -> None:
    code = ("import sys, httpay\n"
            f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {set(OPTIONAL)!r})\n"
            "print(','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    loaded = [m for m in done.stdout.strip().split(",") if m]
    assert not loaded, (f"`import httpay` loaded {', '.join(loaded)}: an optional part's dependency "
                        "(load it only when that part is used, behind its extra)")
