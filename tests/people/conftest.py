"""Fixtures for the people-facing surface: the demo service, a broke account, a real Chromium."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]




@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's chromium, installed by scripts/browser.sh if missing. No browser is a failure, never a skip."""
    p = subprocess.run(["bash", str(ROOT / "scripts" / "browser.sh")], capture_output=True, text=True, timeout=900)
    if p.returncode != 0 or not p.stdout.strip():
        pytest.fail(f"scripts/browser.sh could not provide chromium (exit {p.returncode}):\n{p.stderr[-2000:]}")
    return p.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Module-scoped on purpose: sync Playwright holds an event loop open in this thread, which
    would break later tests that call asyncio.run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
