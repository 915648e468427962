#!/usr/bin/env bash
# Install and run a real LNbits server for httpay's end-to-end wallet tests.
#
# LNbits pins pydantic 1 and an older fastapi, which clash with httpay's own dependencies, so it
# lives in its own venv under .cache/lnbits/venv. bolt11 there only imports with bitstring<5.
#
#   scripts/lnbits.sh install            install (a fast no-op when already at the pinned version)
#   scripts/lnbits.sh run [lnbits args]  install if needed, then exec LNbits from its site-packages
#   scripts/lnbits.sh site-packages      print the site-packages folder LNbits must be started from
#   scripts/lnbits.sh bin                print the path of the `lnbits` launcher
#
# Environment: LNBITS_VERSION (default 1.6.2), PYTHON (default python3.11, else python3),
# LNBITS_CACHE (default <repo>/.cache/lnbits).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install-lock.sh"

LNBITS_VERSION="${LNBITS_VERSION:-1.6.2}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LNBITS_CACHE:-$REPO_ROOT/.cache/lnbits}"
VENV="$CACHE/venv"
LOG="$CACHE/install.log"
STAMP="$CACHE/installed-version"

pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
    for p in python3.11 python3; do
        if command -v "$p" >/dev/null 2>&1; then echo "$p"; return; fi
    done
    echo "lnbits.sh: no python3.11 or python3 on PATH" >&2
    exit 1
}

fail() {
    echo "lnbits.sh: $1" >&2
    if [[ -f "$LOG" ]]; then
        echo "---- last 40 lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

installed() {
    # The stamp is written only after a full, verified install; re-check the launcher exists so a
    # half-deleted venv is repaired rather than trusted.
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$LNBITS_VERSION" && -x "$VENV/bin/lnbits" ]]
}

apt_install_build_deps() {
    # Only needed when a dependency (e.g. secp256k1, psycopg) has no wheel for this platform.
    if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "not root or no apt-get: skipping system build deps" >>"$LOG"
        return 0
    fi
    local pkgs=(build-essential pkg-config automake autoconf libtool libffi-dev libsecp256k1-dev libgmp-dev)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$LOG" 2>&1 || true
    # Keep only names this distribution knows, so one unknown name does not sink the rest.
    local known=()
    for p in "${missing[@]}"; do
        apt-cache show "$p" >/dev/null 2>&1 && known+=("$p")
    done
    ((${#known[@]})) || return 0
    echo "apt-get installing: ${known[*]}" >>"$LOG"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${known[@]}" >>"$LOG" 2>&1 \
        || echo "apt-get install failed (continuing; pip may still succeed)" >>"$LOG"
}

do_install() {
    if installed; then
        return 0
    fi
    with_install_lock do_install_locked
}

do_install_locked() {
    if installed; then
        return 0
    fi
    mkdir -p "$CACHE"
    : >"$LOG"
    local py
    py="$(pick_python)"
    echo "installing lnbits==$LNBITS_VERSION with $($py --version 2>&1) into $VENV" | tee -a "$LOG"
    local t0=$SECONDS
    if [[ ! -x "$VENV/bin/python" ]]; then
        "$py" -m venv "$VENV" >>"$LOG" 2>&1 || fail "could not create venv $VENV"
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip wheel setuptools >>"$LOG" 2>&1 \
        || fail "could not upgrade pip in $VENV"
    # First try with wheels only as available; if it fails (a source build needing system libs),
    # install the build deps and retry once.
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "lnbits==$LNBITS_VERSION" "bitstring<5" >>"$LOG" 2>&1; then
        echo "first pip attempt failed; installing system build deps and retrying" >>"$LOG"
        apt_install_build_deps
        "$VENV/bin/python" -m pip install --disable-pip-version-check "lnbits==$LNBITS_VERSION" "bitstring<5" >>"$LOG" 2>&1 \
            || fail "pip install lnbits==$LNBITS_VERSION failed"
    fi
    [[ -x "$VENV/bin/lnbits" ]] || fail "pip finished but $VENV/bin/lnbits is missing"
    "$VENV/bin/python" -c "import lnbits.app, bolt11" >>"$LOG" 2>&1 || fail "lnbits installed but does not import"
    echo "$LNBITS_VERSION" >"$STAMP"
    echo "lnbits $LNBITS_VERSION installed in $((SECONDS - t0)) s" | tee -a "$LOG"
}

site_packages() {
    # find_spec locates the package without importing it (importing lnbits takes seconds).
    "$VENV/bin/python" -c 'import importlib.util as u, os; print(os.path.dirname(list(u.find_spec("lnbits").submodule_search_locations)[0]))'
}

cmd="${1:-install}"
shift || true
case "$cmd" in
    install)
        do_install
        ;;
    site-packages)
        do_install >&2
        site_packages
        ;;
    bin)
        do_install >&2
        echo "$VENV/bin/lnbits"
        ;;
    run)
        do_install >&2
        # LNbits serves lnbits/static relative to the working directory.
        cd "$(site_packages)"
        exec "$VENV/bin/lnbits" "$@"
        ;;
    *)
        echo "usage: $0 {install|run [args]|site-packages|bin}" >&2
        exit 2
        ;;
esac
