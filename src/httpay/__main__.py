"""`python -m httpay`: the `httpay` command, for a venv whose scripts are not on PATH."""

from httpay.apps.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
