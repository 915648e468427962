#!/usr/bin/env bash
# httpay's two commands from a fresh machine (Python 3.11 + pip):
#   bash run.sh demo [--non-interactive|--approve]   set up, then tell the notebook's story offline
#   bash run.sh test [pytest args]                  set up, start what tests need, run the whole suite
# Anything else after `run.sh` is run inside the project's venv, e.g. `bash run.sh httpay ledger`.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}

setup() {
  # $1: the extra to install (demo: only what the demo needs; test: everything the suite needs).
  # A venv set up for the tests has the demo's parts too.
  local extra="$1" stamp="$VENV/.httpay-installed"
  local want
  want=$(cat pyproject.toml | sha256sum | cut -c1-16)
  if [ ! -x "$VENV/bin/python" ]; then
    echo "httpay: creating $VENV" >&2
    "$PY" -m venv "$VENV"
  fi
  if [ -f "$stamp" ] && { [ "$(cat "$stamp")" = "$want test" ] || [ "$(cat "$stamp")" = "$want $extra" ]; }; then
    return
  fi
  echo "httpay: installing httpay[$extra] into $VENV (once)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extra]" >&2
  echo "$want $extra" > "$stamp"
}

cmd=${1:-demo}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    setup demo
    exec "$VENV/bin/httpay" demo "$@"
    ;;
  test)
    setup test
    [ -x scripts/test-services.sh ] && source scripts/test-services.sh
    # One pytest worker per core, at most 4 (each starts its own servers); `-n 0` runs in one process.
    workers=$(nproc 2>/dev/null || echo 2)
    [ "$workers" -gt 4 ] && workers=4
    set +e
    "$VENV/bin/python" -m pytest -n "$workers" "$@"
    rc=$?
    set -e
    if [ $rc -eq 5 ]; then echo "httpay: pytest collected no tests; that is a failure here" >&2; exit 1; fi
    exit $rc
    ;;
  httpay)
    setup demo  # the command itself needs no test tools (a venv set up for the tests serves too)
    exec "$VENV/bin/httpay" "$@"
    ;;
  *)
    setup test
    PATH="$VENV/bin:$PATH" exec "$cmd" "$@"
    ;;
esac
