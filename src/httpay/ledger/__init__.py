"""The payment record: SQLite by default, PostgreSQL for a fleet sharing one budget."""

from __future__ import annotations

import os
from pathlib import Path

from httpay.errors import (  # the first two re-exported: where they were first found
    ChallengeInFlight,
    ConfigError,
    DuplicatePayment,
)
from httpay.ledger.base import Intent, Ledger
from httpay.ledger.models import Receipt, Refusal, Status
from httpay.ledger.sqlite import SQLiteLedger

__all__ = ["ChallengeInFlight", "DuplicatePayment", "Intent", "Ledger", "Receipt", "Refusal", "SQLiteLedger", "Status", "default_ledger_path", "open_ledger"]


def default_ledger_path() -> Path:
    """`$HTTPAY_LEDGER`, else `ledger.sqlite3` in the user's data dir."""
    env = os.environ.get("HTTPAY_LEDGER")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("httpay", appauthor=False)) / "ledger.sqlite3"


def open_ledger(where: str | os.PathLike[str] | Ledger | None = None) -> Ledger:
    """A ledger from a path, a `postgresql://` URL, an existing Ledger, or the default file."""
    if isinstance(where, Ledger):
        return where
    if where is not None and not isinstance(where, str | os.PathLike):
        raise ConfigError(f"ledger= must be a file path, a postgresql:// URL, ':memory:' or an httpay Ledger, "
                          f"got {type(where).__name__} {where!r:.40}")
    own_place = where is None and not os.environ.get("HTTPAY_LEDGER")
    if where is None:  # the variable as written: a URL in it is a URL (a Path would fold its "//")
        where = os.environ.get("HTTPAY_LEDGER") or default_ledger_path()
    text = os.fspath(where)
    if isinstance(text, str) and not text.startswith(("postgres://", "postgresql://", "sqlite:///")) and text != ":memory:":
        text = os.path.expanduser(text)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("ledger= must name a file: a path, a postgresql:// URL or ':memory:'")
    if text.startswith(("postgres://", "postgresql://")):
        from httpay.extras import require

        require("postgres")
        from httpay.ledger.postgres import PostgresLedger

        return PostgresLedger(text)
    text = text.removeprefix("sqlite:///")
    return SQLiteLedger(text, make_folder=own_place)  # a folder a person named must exist: a typo is no new ledger
