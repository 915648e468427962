#!/usr/bin/env bash
# Install the JavaScript peers httpay's interop tests run against (lsat-js, @getalby/lightning-tools, mppx + viem)
# into tests/interop/node/node_modules, exactly as package-lock.json pins them.
#
#   scripts/npm-interop.sh          install (a fast no-op when already installed for this lock file)
#   scripts/npm-interop.sh node     install if needed, then print the path of the `node` to run
#
# A fresh machine may have Python and pip only: when `node` or `npm` is missing it installs Debian's
# `nodejs` and `npm` packages with apt-get (as root). Node.js must be 18 or newer (Debian 12 ships 18,
# which these packages run on). Anything else fails loudly: the interop tests never skip.
#
# lsat-js 2.0.6 names its macaroon library as a git dependency that no package registry serves;
# package.json's `overrides` put the registry's `macaroon` 3.0.4 (the library that fork came from,
# same API) in its place. npm 9 (Debian 12 ships 9.2) cannot read that lock file ("Invalid
# comparator: git+https://..."), so with npm < 10 the script first installs npm 10 from the registry
# into .cache/npm-interop and runs that.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install-lock.sh"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$REPO_ROOT/tests/interop/node"
STAMP="$DIR/node_modules/.httpay-installed"
LOG="${TMPDIR:-/tmp}/httpay-npm-interop.log"
MIN_NODE_MAJOR=18
NPM10_VERSION=10.9.2
NPM10_PREFIX="$REPO_ROOT/.cache/npm-interop/npm-$NPM10_VERSION"
NPM=(npm)

fail() {
    echo "npm-interop.sh: $1" >&2
    if [[ -s "$LOG" ]]; then
        echo "---- last 40 lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

ensure_node() {
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        return
    fi
    if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
        fail "node and npm are needed for tests/interop and are missing; install Node.js >= $MIN_NODE_MAJOR with npm (as root this script does it with apt-get)"
    fi
    echo "npm-interop.sh: installing Debian's nodejs and npm (once)" >&2
    : >"$LOG"
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$LOG" 2>&1 || fail "apt-get update failed"
    local want=()
    command -v node >/dev/null 2>&1 || want+=(nodejs)
    command -v npm >/dev/null 2>&1 || want+=(npm)
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}" >>"$LOG" 2>&1 \
        || fail "apt-get install ${want[*]} failed"
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || fail "node or npm still missing after apt-get"
}

check_node_version() {
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')" || fail "node does not run"
    if ((major < MIN_NODE_MAJOR)); then
        fail "node $(node --version) is too old for the interop peers; need >= $MIN_NODE_MAJOR"
    fi
}

pick_npm() {
    local major
    major="$(npm --version | cut -d. -f1)" || fail "npm does not run"
    ((major >= 10)) && return
    if [[ ! -x "$NPM10_PREFIX/node_modules/.bin/npm" ]]; then
        echo "npm-interop.sh: npm $(npm --version) cannot read the lock file; installing npm $NPM10_VERSION (once)" >&2
        mkdir -p "$NPM10_PREFIX"
        # From a neutral folder: npm 9 chokes on the interop project's tree wherever it meets it.
        (cd "$NPM10_PREFIX" && npm install --prefix "$NPM10_PREFIX" --no-audit --no-fund --ignore-scripts \
            "npm@$NPM10_VERSION") >>"$LOG" 2>&1 || fail "installing npm $NPM10_VERSION failed"
    fi
    NPM=("$NPM10_PREFIX/node_modules/.bin/npm")
}

want_stamp() {
    # Reinstall when the lock file or the node major version changes.
    echo "$(sha256sum "$DIR/package-lock.json" | cut -c1-16) node$(node -p 'process.versions.node.split(".")[0]')"
}

installed() {
    [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(want_stamp)" \
        && -f "$DIR/node_modules/lsat-js/package.json" \
        && -f "$DIR/node_modules/@getalby/lightning-tools/package.json" \
        && -f "$DIR/node_modules/mppx/package.json" && -f "$DIR/node_modules/viem/package.json" ]]
}

install() {
    if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && installed; then
        check_node_version
        return
    fi
    with_install_lock install_locked
}

install_locked() {
    ensure_node
    check_node_version
    installed && return
    : >"$LOG"
    pick_npm
    echo "npm-interop.sh: npm ci in tests/interop/node (once)" >&2
    # --ignore-scripts: no peer needs a native build (secp256k1 falls back to its JS code).
    # A download the registry stalls is given up after a minute and tried again (npm's own default
    # waits five minutes a try: a slow registry once held a fresh machine's suite for over ten).
    (cd "$DIR" && "${NPM[@]}" ci --ignore-scripts --no-audit --no-fund --fetch-timeout=60000 --fetch-retries=5 \
        --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=20000) >>"$LOG" 2>&1 || fail "npm ci failed"
    (cd "$DIR" && node -e "require('lsat-js'); import('@getalby/lightning-tools/402/l402'); import('mppx/server'); import('mppx/client'); import('viem/accounts')") >>"$LOG" 2>&1 \
        || fail "the installed peers do not load"
    want_stamp >"$STAMP"
}

case "${1:-install}" in
    install) install ;;
    node) install; command -v node ;;
    *) fail "unknown command ${1}; use: install | node" ;;
esac
