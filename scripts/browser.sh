#!/usr/bin/env bash
# Make sure a headless Chromium is installed for the dashboard's browser tests.
# Idempotent: does nothing when /usr/bin/chromium is already there. Debian's package, not
# Playwright's download (which cannot reach its CDN here). Prints the browser's path.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/install-lock.sh"

BROWSER=/usr/bin/chromium

if [ ! -x "$BROWSER" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
            echo "scripts/browser.sh: chromium is missing and installing it needs root (apt-get install chromium)" >&2
            exit 1
        fi
    else
        SUDO=""
    fi
    export DEBIAN_FRONTEND=noninteractive
    install_browser() {
        if [ ! -x "$BROWSER" ]; then
            $SUDO apt-get update -qq
            $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
        fi
    }
    with_install_lock install_browser
fi

if [ ! -x "$BROWSER" ]; then
    echo "scripts/browser.sh: $BROWSER is still missing after apt-get install chromium" >&2
    exit 1
fi
echo "$BROWSER"
