"""The README's "Interop with real peers" table stays honest: every row names tests that exist in
the suite, and every row marked pass names at least one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Interop with real peers"
TEST_ID = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows() -> list[list[str]]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [c.strip().lower() for c in lines[0].strip("|").split("|")]
    assert header == ["peer", "version", "tried", "result", "tests"], header
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _defined(path: str, name: str) -> bool:
    file = REPO_ROOT / path
    if not file.is_file():
        return False
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.FunctionDef) and n.name == name and n.name.startswith("test_") for n in tree.body)


def test_every_passing_row_names_tests_that_exist() -> None:
    rows = _rows()
    assert len(rows) >= 10
    for peer, version, _tried, result, tests in rows:
        ids = TEST_ID.findall(tests)
        assert result.lower().startswith(("pass", "fail")), f"{peer} {version}: result must say pass or fail"
        if result.lower().startswith("pass"):
            assert ids, f"{peer} {version}: a row marked pass must name the test that proves it"
        for path, name in ids:
            assert _defined(path, name), f"{peer} {version}: {path}::{name} is not a test in the suite"
