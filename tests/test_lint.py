"""The code is held to its own rules on every test run: ruff (as configured in pyproject.toml)
over src, tests, tools and bench, and mypy --strict over src/httpay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


def test_ruff_is_clean() -> None:
    done = _run("ruff", "check", "src", "tests", "tools", "bench")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_mypy_strict_is_clean_on_src() -> None:
    done = _run("mypy", "--strict", "src/httpay")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
